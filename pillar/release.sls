# The release being rolled out. Its id is also the backup tag: the runbook's
# `cp -R /home/ecsc /home/ecsc_20170220` becomes the backup /home/ecsc_20170220.
release:
  id: '20170220'
  # Where the master serves each service's archive; {release} and {service} are filled in.
  source: 'salt://releases/{release}/{service}.tar'
  # sha256 of each archive, from the release manager (service: hex). Every upgraded service
  # needs one: pre-flight refuses the run otherwise. The lab fills them in (pillar/lab.sls).
  sha256: {}
  # Retention: dated backups kept per program dir (the newest and the running release's
  # backup are never pruned).
  keep_backups: 3
  # How the two fixed issues are proven after each host's start.
  checks:
    ecmc:
      - id: bug-9427
        title: 'customer balance shown exactly (12.345, not 12.35)'
        http:
          url: 'http://{address}:8080/ecmc/customers'
          contains: '"balance":12.345'
    schedule:
      - id: money-log-timestamp
        title: 'log.money.* lines start with an ISO-8601 timestamp'
        log:
          log: app
          pattern: '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d) log\.money\.(success|failed)\b'
          forbidden: '^log\.money\.'
    schedule-res:
      - id: money-log-timestamp
        title: 'log.money.* lines start with an ISO-8601 timestamp'
        log:
          log: app
          pattern: '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d) log\.money\.(success|failed)\b'
          forbidden: '^log\.money\.'
