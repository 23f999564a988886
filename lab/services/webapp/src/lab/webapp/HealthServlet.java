package lab.webapp;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import lab.common.Json;

/** {@code GET /<svc>/health} → {@code {"service":"ecsc","release":"20170220","status":"UP"}} */
public final class HealthServlet extends JsonServlet {
    private static final long serialVersionUID = 1L;

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response)
            throws IOException {
        send(response, Json.health(service()));
    }
}
