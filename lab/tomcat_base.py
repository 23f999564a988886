"""Write a CATALINA_BASE for Debian's Tomcat 10 at the runbook's path.

Debian's ``tomcat10-common`` gives CATALINA_HOME (``/usr/share/tomcat10``: bin/ and lib/) but
no ``conf/``; each lab host gets its own base with a minimal ``server.xml`` serving one
application directory on the host's own loopback address.
"""

import os
import pathlib
from xml.sax.saxutils import quoteattr

CATALINA_HOME = pathlib.Path("/usr/share/tomcat10")

# Small heap and a single GC thread: eight JVMs share two cores and the lab's memory budget.
JVM_OPTS = (
    "-Xms16m -Xmx64m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
    " -XX:ReservedCodeCacheSize=32m -XX:MaxMetaspaceSize=96m -Xshare:auto"
)

_SERVER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by lab/tomcat_base.py. Shutdown port disabled: stop by signal. -->
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector address={address} port="{port}" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"
            deployOnStartup="false">
        <Context path={context_path} docBase={doc_base} reloadable="false">
{parameters}
        </Context>
      </Host>
    </Engine>
  </Service>
</Server>
"""

_STARTUP_SH = """#!/bin/sh
# The runbook's start command (/home/apache-tomcat-7.0.67/bin/startup.sh), here a thin wrapper
# around Debian's Tomcat 10 with this directory as CATALINA_BASE.
CATALINA_BASE="$(cd "$(dirname "$0")/.." && pwd)"
CATALINA_HOME={home}
export CATALINA_BASE CATALINA_HOME
exec "$CATALINA_HOME/bin/startup.sh" "$@"
"""

_SETENV_SH = """# Sourced by catalina.sh.
CATALINA_OPTS="{opts}"
"""
# Lab hosts have no CATALINA_PID, as on the runbook's hosts: after a kill -9 a stale pid file
# (or its pid reused by then) makes catalina.sh refuse to start.
_PIDFILE_SH = 'CATALINA_PID="$CATALINA_BASE/temp/catalina.pid"\n'


def write(base, address, port, app_dir, context_path, parameters=None, jvm_opts=JVM_OPTS,
          pidfile=False):
    """Create or refresh a CATALINA_BASE; return its path.

    ``parameters`` become the context's init parameters (e.g. ``logFile``); ``pidfile``
    makes catalina.sh keep ``temp/catalina.pid``.
    """
    base = pathlib.Path(base)
    for sub in ("bin", "conf", "logs", "temp", "webapps", "work"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    params = "\n".join(
        f"          <Parameter name={quoteattr(k)} value={quoteattr(str(v))} override=\"false\"/>"
        for k, v in sorted((parameters or {}).items())
    )
    (base / "conf" / "server.xml").write_text(
        _SERVER_XML.format(
            address=quoteattr(address),
            port=int(port),
            context_path=quoteattr(context_path),
            doc_base=quoteattr(str(app_dir)),
            parameters=params,
        )
    )
    startup = base / "bin" / "startup.sh"
    startup.write_text(_STARTUP_SH.format(home=CATALINA_HOME))
    os.chmod(startup, 0o755)
    setenv = _SETENV_SH.format(opts=jvm_opts) + (_PIDFILE_SH if pidfile else "")
    (base / "bin" / "setenv.sh").write_text(setenv)
    return base
