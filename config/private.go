package config

import (
	"errors"
	"fmt"
	"os"
)

// ErrFileNotPrivate is returned for a secret file that users other than its owner may read or
// write.
var ErrFileNotPrivate = errors.New("readable or writable by group or others")

// CheckPrivate refuses a secret file (a tokens file, say) whose mode lets anyone but its owner
// read or write it: a token anyone on the host can read is anyone's token. what names the
// file's role in the error, which also says how to fix it.
func CheckPrivate(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s: mode %04o is %w: chmod 600 %s (owned by the user the service runs as)", what, path, perm, ErrFileNotPrivate, path)
	}
	return nil
}
