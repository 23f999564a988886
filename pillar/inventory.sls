# The runbook's four services and eight hosts, with the production values the runbook states.
# Paths are as on the real hosts; a host's `root` (default '') is prefixed to every path, which
# is how the rehearsal lab gives each lab host its own filesystem (see pillar/lab.sls).
inventory:
  # The rollout order, the runbook's: ecsc, ecmc, schedule, schedule-res, host 1 before host 2
  # of each pair. A list, because a mapping's order does not survive a pillar merge.
  order: [ecsc-1, ecsc-2, ecmc-1, ecmc-2, schedule-1, schedule-2, schedule-res-1, schedule-res-2]
  services:
    ecsc:
      kind: tomcat
      hosts:                              # minion id -> address (order: inventory:order)
        ecsc-1: {address: 25.0.3.17}
        ecsc-2: {address: 25.0.3.39}
      install_dir: /home/ecsc
      catalina_base: /home/apache-tomcat-7.0.67
      start: [/home/apache-tomcat-7.0.67/bin/startup.sh]
      logs:
        server: /home/apache-tomcat-7.0.67/logs/catalina.out
        app: /home/ecsclog/ecsc.log
      ready:
        - {log: server, pattern: 'Server startup in \[?\d+\]? (ms|milliseconds)'}
        - {log: app, pattern: 'ecsc started release={release}'}
      health_url: 'http://{address}:8080/ecsc/health'
      # The runbook kills with `kill -9`; these services move money, and SIGKILL drops the
      # requests and transactions in flight. SIGTERM runs Tomcat's own shutdown; SIGKILL only
      # if the JVM is still there after `timeout` seconds. `signal: KILL` restores the runbook.
      stop: {signal: TERM, timeout: 60}
    ecmc:
      kind: tomcat
      hosts:
        ecmc-1: {address: 25.0.3.27}
        ecmc-2: {address: 25.0.3.40}
      install_dir: /home/ecmc
      catalina_base: /home/apache-tomcat-7.0.67
      start: [/home/apache-tomcat-7.0.67/bin/startup.sh]
      logs:
        server: /home/apache-tomcat-7.0.67/logs/catalina.out
        app: /home/ecmclog/ecmc.log
      ready:
        - {log: server, pattern: 'Server startup in \[?\d+\]? (ms|milliseconds)'}
        - {log: app, pattern: 'ecmc started release={release}'}
      health_url: 'http://{address}:8080/ecmc/health'
      stop: {signal: TERM, timeout: 60}   # as ecsc: graceful, SIGKILL after 60 s
    schedule:
      kind: standalone
      hosts:
        schedule-1: {address: 25.0.3.26}
        schedule-2: {address: 25.0.3.38}
      install_dir: /home/schedule
      start: [sh, startup.sh]             # runbook: cd /home/schedule; nohup sh startup.sh &
      logs:
        app: /home/schedulelog/schedule.log
      ready:
        - {log: app, pattern: 'INFO Started schedule release={release}'}
      health_url: 'http://{address}:8090/health'
      stop: {signal: TERM, timeout: 30}   # runbook: kill -15
      keep: [conf/host.properties]        # host-local config the archive does not carry
    schedule-res:
      kind: standalone
      hosts:
        schedule-res-1: {address: 25.0.3.51}
        schedule-res-2: {address: 25.0.3.61}
      install_dir: /home/schedule-res
      start: [sh, startup.sh]
      logs:
        app: /home/schedulereslog/scheduleres.log
      ready:
        - {log: app, pattern: 'INFO Started schedule-res release={release}'}
      health_url: 'http://{address}:8090/health'
      stop: {signal: TERM, timeout: 30}
      keep: [conf/host.properties]
