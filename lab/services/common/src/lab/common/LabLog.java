package lab.common;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;

/**
 * Appends lines to the application log, one open/write/close per line.
 *
 * <p>Each line is a single {@code write(2)} on a file opened with {@code O_APPEND}, so lines from
 * several threads (or a truncating operator) never interleave, and nothing is buffered: a line is
 * on disk when {@link #line} returns.
 */
public final class LabLog {
    /** ISO-8601, UTC, always with milliseconds: {@code 2026-11-28T02:10:00.123Z}. */
    private static final DateTimeFormatter TIMESTAMP =
            DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private final Path file;

    /** Creates the log's parent directories (not the file: the first line does). */
    public LabLog(Path file) throws IOException {
        this.file = file.toAbsolutePath();
        Path parent = this.file.getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
    }

    public Path file() {
        return file;
    }

    public static String timestamp() {
        return TIMESTAMP.format(Instant.now());
    }

    /** Appends {@code text} verbatim (a newline is added). */
    public void line(String text) {
        byte[] bytes = (text + "\n").getBytes(StandardCharsets.UTF_8);
        try (OutputStream out = Files.newOutputStream(file, StandardOpenOption.CREATE,
                StandardOpenOption.WRITE, StandardOpenOption.APPEND)) {
            out.write(bytes);
        } catch (IOException e) {
            System.err.println("cannot append to " + file + ": " + e);
        }
    }

    /** {@code <timestamp> INFO <message>} */
    public void info(String message) {
        line(timestamp() + " INFO " + message);
    }

    /** {@code <timestamp> ERROR <message>} */
    public void error(String message) {
        line(timestamp() + " ERROR " + message);
    }
}
