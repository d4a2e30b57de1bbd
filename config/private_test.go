package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPrivate(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o620, false},
		{0o660, false},
	} {
		path := filepath.Join(t.TempDir(), "tokens")
		if err := os.WriteFile(path, []byte("tok demo\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// Chmod, not the create mode, which the umask would narrow.
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPrivate("tokens file", path)
		if tc.ok {
			if err != nil {
				t.Errorf("mode %04o: %v", tc.mode, err)
			}
			continue
		}
		if !errors.Is(err, ErrFileNotPrivate) {
			t.Errorf("mode %04o: got %v, want ErrFileNotPrivate", tc.mode, err)
			continue
		}
		for _, want := range []string{path, "chmod 600", "tokens file"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %04o: error %q does not mention %q", tc.mode, err, want)
			}
		}
	}
	if err := CheckPrivate("tokens file", filepath.Join(t.TempDir(), "missing")); err == nil || errors.Is(err, ErrFileNotPrivate) {
		t.Errorf("missing file: %v", err)
	}
}
