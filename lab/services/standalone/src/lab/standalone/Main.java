package lab.standalone;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigDecimal;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import lab.common.BuildInfo;
import lab.common.Faults;
import lab.common.Json;
import lab.common.LabLog;

/**
 * schedule / schedule-res: a standalone JVM started by {@code startup.sh}.
 *
 * <pre>
 * java -Dservice.name=schedule -cp lib/schedule.jar lab.standalone.Main conf/host.properties
 * </pre>
 *
 * <p>host.properties: {@code bind.address}, {@code http.port}, {@code log.file}. Serves
 * {@code GET /health}; every 2 s logs a {@code log.money.success} / {@code log.money.failed}
 * line (release v1: without timestamp, the bug the upgrade fixes). Exits 0 on SIGTERM.
 */
public final class Main {
    private static final long MONEY_PERIOD_MS = 2000;

    private Main() {
    }

    public static void main(String[] args) {
        String service = System.getProperty("service.name", "");
        if (service.isBlank()) {
            die(2, "lab.standalone.Main: -Dservice.name=<service> is required");
        }
        if (args.length != 1) {
            die(2, service + ": usage: java -Dservice.name=" + service
                    + " -cp lib/" + service + ".jar " + Main.class.getName()
                    + " conf/host.properties");
        }
        Path confFile = Path.of(args[0]);
        Properties conf = load(service, confFile);
        String address = required(service, confFile, conf, "bind.address");
        String portText = required(service, confFile, conf, "http.port");
        String logFile = required(service, confFile, conf, "log.file");
        int port = 0;
        try {
            port = Integer.parseInt(portText);
        } catch (NumberFormatException e) {
            die(2, service + ": " + confFile.toAbsolutePath() + ": http.port is not a number: "
                    + portText);
        }
        if (port < 1 || port > 65535) {
            die(2, service + ": " + confFile.toAbsolutePath() + ": http.port out of range: "
                    + port);
        }
        if (!Path.of(logFile).isAbsolute()) {
            die(2, service + ": " + confFile.toAbsolutePath()
                    + ": log.file must be an absolute path: " + logFile);
        }
        LabLog log = null;
        try {
            log = new LabLog(Path.of(logFile));
        } catch (IOException e) {
            die(1, service + ": cannot create the directory of log.file " + logFile + ": " + e);
        }
        new Main().run(service, address, port, log);
    }

    private void run(String service, String address, int port, LabLog log) {
        log.info("Starting " + service + " release=" + BuildInfo.RELEASE);
        final HttpServer[] server = new HttpServer[1];
        final ScheduledExecutorService[] ticker = new ScheduledExecutorService[1];
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log.info("Stopping " + service);
            if (ticker[0] != null) {
                ticker[0].shutdownNow();
            }
            if (server[0] != null) {
                server[0].stop(0);
            }
            // A JVM ended by SIGTERM exits 143 by default; a clean stop is exit 0.
            Runtime.getRuntime().halt(0);
        }, service + "-shutdown"));

        if (BuildInfo.BROKEN_STARTUP) {
            // The broken build hangs during start-up: never binds, never logs "Started".
            while (true) {
                try {
                    Thread.sleep(Long.MAX_VALUE);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }

        Faults.readyDelay(); // before it listens: health does not answer while it starts
        try {
            HttpServer http = HttpServer.create(
                    new InetSocketAddress(InetAddress.getByName(address), port), 16);
            http.createContext("/", exchange -> handle(service, exchange));
            http.start();
            server[0] = http;
        } catch (IOException | RuntimeException e) {
            log.error("Failed to start " + service + " release=" + BuildInfo.RELEASE
                    + ": cannot listen on " + address + ":" + port + ": " + e);
            System.err.println(service + ": cannot listen on " + address + ":" + port + ": " + e);
            Runtime.getRuntime().halt(1); // not exit(): the shutdown hook would turn it into 0
        }
        Faults.ignoreTerm(log, service);
        if (Faults.logsStarted()) {
            log.info("Started " + service + " release=" + BuildInfo.RELEASE + " on " + address
                    + ":" + port);
        }
        Faults.afterStarted(log, service);

        AtomicLong orders = new AtomicLong();
        ticker[0] = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, service + "-money");
            t.setDaemon(false);
            return t;
        });
        ticker[0].scheduleAtFixedRate(() -> log.line(moneyLine(orders.incrementAndGet())),
                0, MONEY_PERIOD_MS, TimeUnit.MILLISECONDS);
    }

    /**
     * Odd orders succeed, even orders fail. v1 has no timestamp on these lines (the runbook's
     * second fix); later builds prefix the same ISO-8601 UTC timestamp as every other line.
     */
    static String moneyLine(long order) {
        BigDecimal amount = BigDecimal.valueOf(1000 + (order * 2575) % 9000, 2);
        String text = order % 2 == 1
                ? "log.money.success order=" + order + " amount=" + amount.toPlainString()
                : "log.money.failed order=" + order + " amount=" + amount.toPlainString()
                        + " reason=insufficient-funds";
        return BuildInfo.BUG_MONEY_LOG_NO_TIMESTAMP ? text : LabLog.timestamp() + " " + text;
    }

    private static void handle(String service, HttpExchange exchange) throws IOException {
        try (exchange; InputStream in = exchange.getRequestBody()) {
            in.readAllBytes();
            String path = exchange.getRequestURI().getPath();
            String method = exchange.getRequestMethod();
            if (!"/health".equals(path)) {
                reply(exchange, 404, "{\"error\":\"not found\"}");
            } else if (!"GET".equals(method) && !"HEAD".equals(method)) {
                exchange.getResponseHeaders().set("Allow", "GET, HEAD");
                reply(exchange, 405, "{\"error\":\"method not allowed\"}");
            } else {
                reply(exchange, 200, Json.health(service));
            }
        }
    }

    private static void reply(HttpExchange exchange, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.getResponseHeaders().set("Cache-Control", "no-store");
        boolean head = "HEAD".equals(exchange.getRequestMethod());
        exchange.sendResponseHeaders(status, head ? -1 : bytes.length);
        if (!head) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(bytes);
            }
        }
    }

    private static Properties load(String service, Path confFile) {
        Properties conf = new Properties();
        try (InputStream in = Files.newInputStream(confFile)) {
            conf.load(in);
        } catch (IOException e) {
            die(2, service + ": cannot read " + confFile.toAbsolutePath() + ": " + e);
        }
        return conf;
    }

    private static String required(String service, Path confFile, Properties conf, String key) {
        String value = conf.getProperty(key, "").trim();
        if (value.isEmpty()) {
            die(2, service + ": " + confFile.toAbsolutePath() + ": missing required key " + key);
        }
        return value;
    }

    private static void die(int status, String message) {
        System.err.println(message);
        System.exit(status);
    }
}
