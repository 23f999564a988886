package lab.webapp;

import jakarta.servlet.ServletContext;
import jakarta.servlet.ServletContextEvent;
import jakarta.servlet.ServletContextListener;
import java.io.IOException;
import java.nio.file.Path;
import lab.common.BuildInfo;
import lab.common.Faults;
import lab.common.LabLog;

/**
 * Writes the application log's start and stop lines.
 *
 * <p>Context parameters: {@code service} (from WEB-INF/web.xml) and {@code logFile} (absolute
 * path, from the host's Tomcat {@code <Context>}). The {@code broken} build fails here, so Tomcat
 * starts but the context does not.
 */
public final class LifecycleListener implements ServletContextListener {
    private LabLog log;
    private String service;
    private boolean started;

    @Override
    public void contextInitialized(ServletContextEvent event) {
        ServletContext context = event.getServletContext();
        service = required(context, "service", "WEB-INF/web.xml context-param");
        String logFile = required(context, "logFile", "Tomcat <Context> <Parameter>");
        try {
            log = new LabLog(Path.of(logFile));
        } catch (IOException e) {
            throw new IllegalStateException(service + ": cannot create the directory of logFile "
                    + logFile + ": " + e, e);
        }
        if (BuildInfo.BROKEN_STARTUP) {
            log.error(service + " failed to start release=" + BuildInfo.RELEASE
                    + ": broken build (variant " + BuildInfo.VARIANT + ")");
            throw new IllegalStateException(service + " release=" + BuildInfo.RELEASE
                    + " is a broken build: refusing to start");
        }
        Faults.readyDelay(); // Tomcat serves nothing until this listener returns
        started = true;
        Faults.ignoreTerm(log, service);
        if (Faults.logsStarted()) {
            log.info(service + " started release=" + BuildInfo.RELEASE);
        }
        Faults.afterStarted(log, service);
    }

    @Override
    public void contextDestroyed(ServletContextEvent event) {
        if (started) {
            log.info(service + " stopping");
        }
    }

    private static String required(ServletContext context, String name, String where) {
        String value = context.getInitParameter(name);
        if (value == null || value.isBlank()) {
            throw new IllegalStateException("context " + context.getContextPath()
                    + ": missing init parameter '" + name + "' (" + where + ")");
        }
        return value;
    }
}
