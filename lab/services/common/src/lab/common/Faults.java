package lab.common;

import sun.misc.Signal;

/**
 * The misbehaviour of the fault variants (lab/build.py: ignore-term, crashloop, fatal-healthy,
 * silent), shared by the Tomcat webapps and the standalone JVMs. Every method does nothing in a
 * build without its fault.
 */
public final class Faults {
    private Faults() {
    }

    /** ignore-term: replace the JVM's SIGTERM handler (its shutdown) by a log line. */
    public static void ignoreTerm(LabLog log, String service) {
        if (!BuildInfo.IGNORE_TERM) {
            return;
        }
        Signal.handle(new Signal("TERM"),
                sig -> log.info(service + " ignoring SIGTERM (variant " + BuildInfo.VARIANT + ")"));
    }

    /** Start-up work of a slow service (lab/build.py --ready-delay): before it is ready. */
    public static void readyDelay() {
        if (BuildInfo.READY_DELAY_MS > 0) {
            try {
                Thread.sleep(BuildInfo.READY_DELAY_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Whether the started line is written (the silent variant never writes it). */
    public static boolean logsStarted() {
        return !BuildInfo.NO_STARTED_LINE;
    }

    /**
     * After the started line: crashloop exits CRASH_DELAY_MS later (after health answered);
     * fatal-healthy logs an OutOfMemoryError while health keeps answering 200.
     */
    public static void afterStarted(LabLog log, String service) {
        if (BuildInfo.FATAL_AFTER_READY) {
            log.error(service + " java.lang.OutOfMemoryError: Java heap space (variant "
                    + BuildInfo.VARIANT + ")");
        }
        if (BuildInfo.CRASH_AFTER_READY) {
            Thread crash = new Thread(() -> {
                try {
                    Thread.sleep(BuildInfo.CRASH_DELAY_MS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                log.error(service + " crashed after start (variant " + BuildInfo.VARIANT + ")");
                Runtime.getRuntime().halt(1);
            }, service + "-crash");
            crash.setDaemon(true);
            crash.start();
        }
    }
}
