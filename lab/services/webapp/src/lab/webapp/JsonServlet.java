package lab.webapp;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/** Base for the JSON endpoints: exact {@code Content-Type: application/json}, UTF-8 body. */
abstract class JsonServlet extends HttpServlet {
    private static final long serialVersionUID = 1L;

    protected String service() {
        return getServletContext().getInitParameter("service");
    }

    protected static void send(HttpServletResponse response, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        response.setStatus(HttpServletResponse.SC_OK);
        response.setContentType("application/json");
        response.setHeader("Cache-Control", "no-store");
        response.setContentLength(bytes.length);
        response.getOutputStream().write(bytes);
    }
}
