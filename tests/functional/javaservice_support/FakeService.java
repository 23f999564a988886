// A stand-in for the runbook's JVMs (schedule, schedule-res, ...), compiled by the functional
// tests with javac into a temporary directory. Arguments are key=value:
//
//   log=<path>        append log lines there (and to stdout)
//   delay=<ms>        wait before the fatal/ready lines and before serving HTTP
//   http=<addr:port>  answer 200 "ok" on every path (after the delay)
//   fatal=<text>      log this line after the delay (HTTP already up)
//   fatalAfter=<ms>   log the fatal line that long after the ready point instead
//   ready=<text>      log this line after the delay (after HTTP is up)
//   ignoreTerm=true   ignore SIGTERM (only SIGKILL stops it)
//   exitAfter=<ms>    exit with status 3 that long after the ready point
//   anything else     ignored (decoys carry the service's name / paths here)
import com.sun.net.httpserver.HttpServer;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.LocalDateTime;
import java.util.HashMap;
import java.util.Map;

public class FakeService {
    private static PrintStream logOut;

    private static synchronized void log(String message) {
        String line = LocalDateTime.now() + " " + message;
        System.out.println(line);
        System.out.flush();
        if (logOut != null) {
            logOut.println(line);
            logOut.flush();
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = new HashMap<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq > 0) {
                opt.put(arg.substring(0, eq), arg.substring(eq + 1));
            }
        }
        if (opt.containsKey("log")) {
            logOut = new PrintStream(new FileOutputStream(opt.get("log"), true), true, "UTF-8");
        }
        if ("true".equals(opt.get("ignoreTerm"))) {
            sun.misc.Signal.handle(new sun.misc.Signal("TERM"), s -> log("FakeService ignoring SIGTERM"));
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> log("FakeService stopping")));
        log("FakeService starting pid " + ProcessHandle.current().pid());

        Thread.sleep(Long.parseLong(opt.getOrDefault("delay", "0")));
        if (opt.containsKey("http")) {
            String http = opt.get("http");
            int colon = http.lastIndexOf(':');
            HttpServer server = HttpServer.create(
                new InetSocketAddress(http.substring(0, colon), Integer.parseInt(http.substring(colon + 1))), 8);
            server.createContext("/", exchange -> {
                byte[] body = "ok\n".getBytes(StandardCharsets.UTF_8);
                exchange.sendResponseHeaders(200, body.length);
                try (OutputStream out = exchange.getResponseBody()) {
                    out.write(body);
                }
            });
            server.start();
        }
        if (opt.containsKey("fatal") && !opt.containsKey("fatalAfter")) {
            log(opt.get("fatal"));
        }
        if (opt.containsKey("ready")) {
            log(opt.get("ready"));
        }
        if (opt.containsKey("fatalAfter")) {
            Thread.sleep(Long.parseLong(opt.get("fatalAfter")));
            log(opt.get("fatal"));
        }
        if (opt.containsKey("exitAfter")) {
            Thread.sleep(Long.parseLong(opt.get("exitAfter")));
            log("FakeService exiting");
            System.exit(3);
        }
        while (true) {
            Thread.sleep(60_000);
        }
    }
}
