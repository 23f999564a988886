# Every minion sees the whole inventory: each host's states pick their own entry by minion id,
# and the orchestration on the master plans pairs from it.
base:
  '*':
    - inventory
    - release
    - lab
