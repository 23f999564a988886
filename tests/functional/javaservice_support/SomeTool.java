// A decoy for the functional tests: a real JVM running another main class with the service's
// classes on its class path (issue 8.2: `java -cp <other>:<program dir>/lib/x.jar SomeTool`).
public class SomeTool {
    public static void main(String[] args) throws Exception {
        while (true) {
            Thread.sleep(60_000);
        }
    }
}
