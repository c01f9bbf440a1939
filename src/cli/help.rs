//! Examples and the environment for `--help` and the man pages (clap's `after_help`).

pub const ENVIRONMENT: &str = "\
Environment:
  COFFER_REPOSITORY        the repository, as --repo
  COFFER_PASSWORD          the repository passphrase itself (taken out of the environment at start,
                           so no child process sees it)
  COFFER_PASSWORD_FILE     read the passphrase from this file, as --password-file
  COFFER_PASSWORD_COMMAND  run this command for the passphrase, as --password-command
  COFFER_KEY, COFFER_KEY_FILE  a write-only key, as --key and --key-file
  COFFER_PROFILE           a profile, as --profile
  COFFER_CACHE_DIR         the local database folder, as --cache-dir
An empty variable counts as unset.

Exit codes: 0 success, 1 error, 3 backup incomplete (some files unreadable), 10 not a repository,
12 wrong password, 130/143 interrupted.";

pub const BACKUP: &str = "\
Examples:
  coffer -r /srv/backup init
  coffer -r /srv/backup backup ~/ --exclude '*.tmp' --exclude-caches --tag daily
  COFFER_PASSWORD_FILE=/root/.coffer-pass coffer -r s3://bucket/coffer backup /etc /home -x
  coffer --key-file /etc/coffer/key backup /srv          (a write-only key: can back up, not read)";

pub const RESTORE: &str = "\
Examples:
  coffer restore latest --target /tmp/restored
  coffer restore latest~1:/home/me/projects --target ~/projects-yesterday
  coffer restore 1a2b3c4d --target / --include '/etc/nginx' --host web";

pub const MOUNT: &str = "\
Examples:
  coffer mount /mnt/coffer            then, in another shell: ls /mnt/coffer/snapshots
  coffer mount /mnt/coffer --allow-other --cache-size 1GiB
Unmount with Ctrl-C or `fusermount3 -u /mnt/coffer`.";

pub const FORGET: &str = "\
Examples:
  coffer forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  coffer forget --keep-last 10 --host web --prune
  coffer forget --keep-within 30d --keep-tag keep";

pub const KEY: &str = "\
Examples:
  coffer key list
  coffer key add --new-password-file /root/second-pass
  coffer key write-only --save-to-keychain laptop-backup      then: coffer --key keychain:laptop-backup backup ~
  coffer key write-only --output - --host web | systemd-creds encrypt - /etc/credstore.encrypted/coffer-key
  coffer key remove 1a2b3c4d";
