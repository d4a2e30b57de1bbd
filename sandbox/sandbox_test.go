//go:build pacific

// These tests run bwrap and qemu-img for real. They build with the pacific tag that `make test`
// sets for every package: where it is set, a missing bwrap or qemu-img fails them.
package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newSandbox(t *testing.T, opts Options) *Sandbox {
	t.Helper()
	for _, tool := range []string{"bwrap", "qemu-img", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (deploy/install-deps.sh installs it): %v", tool, err)
		}
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs args in s and returns its output and error.
func run(t *testing.T, s *Sandbox, c Command) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := s.Run(ctx, c)
	return out.String(), err
}

func marker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "imagevol-sandbox-marker-" + hex.EncodeToString(b)
}

// A file of the host that is not bound in cannot be opened from inside, whatever the command:
// not by cat, not by qemu-img asked for it directly. The same commands on the host (the
// disabled sandbox) read it: the control that the commands themselves work.
func TestPlantedFileInvisible(t *testing.T) {
	box := newSandbox(t, Options{})
	host := newSandbox(t, Options{Disabled: true})
	secret := marker(t)
	// Readable by anyone, the sandbox's user included: only the mount namespace hides it.
	dir, err := os.MkdirTemp("", "sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	planted := filepath.Join(dir, "planted.raw")
	// 1 MiB so that qemu-img takes it as a raw disk.
	data := append([]byte(secret), make([]byte, 1<<20-len(secret))...)
	if err := os.WriteFile(planted, data, 0o644); err != nil {
		t.Fatal(err)
	}
	hostOut := filepath.Join(dir, "copied.raw")
	for _, tc := range []struct {
		name     string
		args     []string
		hostArgs []string // the control on the host; nil: args
	}{
		{name: "cat", args: []string{"cat", planted}},
		{name: "qemu-img info", args: []string{"qemu-img", "info", "-f", "raw", planted}},
		{name: "qemu-img convert", args: []string{"qemu-img", "convert", "-f", "raw", "-O", "raw", planted, "/tmp/copied.raw"},
			hostArgs: []string{"qemu-img", "convert", "-f", "raw", "-O", "raw", planted, hostOut}},
		{name: "a host file outside the temp dir", args: []string{"cat", "/etc/passwd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, box, Command{Args: tc.args})
			var exit *ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("in the sandbox: err %v, want the command to fail; output %q", err, out)
			}
			if !strings.Contains(out, "No such file or directory") {
				t.Errorf("in the sandbox: output %q, want No such file or directory", out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("in the sandbox: the output holds the planted marker")
			}
			hostArgs := tc.hostArgs
			if hostArgs == nil {
				hostArgs = tc.args
			}
			if out, err := run(t, host, Command{Args: hostArgs}); err != nil {
				t.Fatalf("control on the host: %v: %s", err, out)
			}
		})
	}
	// The control's copy holds the marker: qemu-img outside the sandbox did read the file.
	copied, err := os.ReadFile(hostOut)
	if err != nil || !bytes.HasPrefix(copied, []byte(secret)) {
		t.Fatalf("control: qemu-img on the host did not copy the planted file (%v)", err)
	}
	// And a file the caller binds in is there, read-only.
	out, err := run(t, box, Command{Args: []string{"sh", "-c", "cat /etc/ceph/keyring; echo x >/etc/ceph/keyring"},
		Binds: []Bind{{Source: planted, Target: "/etc/ceph/keyring"}}})
	if !strings.Contains(out, secret) || !strings.Contains(out, "Read-only file system") || err == nil {
		t.Fatalf("bound file: err %v, output %.200q; want it readable and read-only", err, out)
	}
	// A file given as data (how convert passes ceph.conf and the keyring) is there, read-only.
	out, err = run(t, box, Command{Args: []string{"sh", "-c", "cat /etc/ceph/ceph.conf; echo x >/etc/ceph/ceph.conf"},
		Files: []File{{Target: "/etc/ceph/ceph.conf", Data: []byte("[global]\n" + secret + "\n")}}})
	if err == nil || !strings.Contains(out, secret) || !strings.Contains(out, "Read-only file system") {
		t.Fatalf("given file: err %v, output %q; want it readable and read-only", err, out)
	}
}

// The command sees none of the caller's environment, runs as nobody without capabilities, in
// its own PID and UTS namespaces.
func TestIsolation(t *testing.T) {
	secret := marker(t)
	t.Setenv("IMAGEVOL_SANDBOX_TEST_MARKER", secret)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{name: "sandbox", opts: Options{}},
		{name: "disabled", opts: Options{Disabled: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			box := newSandbox(t, tc.opts)
			out, err := run(t, box, Command{Args: []string{"env"}, Env: []string{"EXTRA=1"}})
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the caller's environment reached the command: %q", out)
			}
			for _, want := range []string{"LANG=C", "EXTRA=1", "PATH="} {
				if !strings.Contains(out, want) {
					t.Errorf("environment %q lacks %s", out, want)
				}
			}
		})
	}
	box := newSandbox(t, Options{})
	out, err := run(t, box, Command{Args: []string{"sh", "-c", "id -u; grep CapEff /proc/self/status; hostname; tr '\\0' ' ' </proc/1/cmdline; ls /; v=$(cat /proc/sys/kernel/printk_ratelimit); echo $v >/proc/sys/kernel/printk_ratelimit && echo SYSCTL_$((1+1)); true"}})
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"65534\n", "CapEff:\t0000000000000000", "sandbox\n", "bwrap"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	// Host sysctls are not its to write (rewriting the current value would be harmless).
	if strings.Contains(out, "SYSCTL_2") {
		t.Errorf("the sandbox wrote a host sysctl")
	}
	// The network namespace is shared, so a host service on an abstract socket can be reached:
	// it must see an unprivileged peer (nobody when the caller is root), never uid 0.
	name := "imagevol-sandbox-test-" + marker(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@" + name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan *syscall.Ucred, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			peer <- nil
			return
		}
		defer c.Close()
		raw, _ := c.SyscallConn()
		var cred *syscall.Ucred
		_ = raw.Control(func(fd uintptr) { cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED) })
		peer <- cred
	}()
	connect := "import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\0" + name + "'); s.close()"
	if out, err := run(t, box, Command{Args: []string{"python3", "-c", connect}}); err != nil {
		t.Fatalf("connect to the abstract socket: %v: %s", err, out)
	}
	wantUID := uint32(os.Geteuid())
	if wantUID == 0 {
		wantUID = nobodyID
	}
	select {
	case cred := <-peer:
		if cred == nil || cred.Uid != wantUID || cred.Gid == 0 {
			t.Fatalf("peer credentials %+v, want uid %d and not gid 0", cred, wantUID)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the sandboxed connection never arrived")
	}
	if strings.Contains(out, "root\n") || strings.Contains(out, "home\n") || strings.Contains(out, "var\n") {
		t.Errorf("the root shows more than the sandbox's few entries: %q", out)
	}
}

// The limits are set on the command, and they bite.
func TestLimits(t *testing.T) {
	box := newSandbox(t, Options{Limits: Limits{CPUTime: 2 * time.Second, AddressSpace: 3 << 30}})
	out, err := run(t, box, Command{Args: []string{"sh", "-c", "ulimit -t; ulimit -v; ulimit -c; cat /proc/self/limits"}})
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.HasPrefix(out, "2\n3145728\n0\n") {
		t.Errorf("ulimit -t, -v, -c: %q, want 2, 3145728 (KiB), 0", out)
	}
	for _, re := range []string{`Max cpu time\s+2\s+2\s+seconds`, `Max address space\s+3221225472\s+3221225472\s+bytes`, `Max core file size\s+0\s+0\s+bytes`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("/proc/self/limits lacks %s:\n%s", re, out)
		}
	}

	// A busy loop is stopped by the CPU limit (SIGXCPU at the soft limit, SIGKILL at the hard).
	out, err = run(t, box, Command{Args: []string{"sh", "-c", "while :; do :; done"}})
	var exit *ExitError
	if !errors.As(err, &exit) || (exit.Code != 128+24 && exit.Code != 128+9) {
		t.Fatalf("busy loop: err %v, output %q; want it killed by SIGXCPU or SIGKILL", err, out)
	}
	// qemu-img cannot even start in 16 MiB of address space.
	small := newSandbox(t, Options{Limits: Limits{AddressSpace: 16 << 20}})
	if out, err := run(t, small, Command{Args: []string{"qemu-img", "--version"}}); !errors.As(err, &exit) {
		t.Fatalf("qemu-img in 16 MiB: err %v, output %q; want it to fail", err, out)
	}
	if got := (Limits{}).withDefaults(); got.CPUTime != DefaultCPUTime || got.AddressSpace != DefaultAddressSpace {
		t.Errorf("zero limits became %+v, want the defaults", got)
	}
}

// A sandbox that cannot be set up is ErrUnavailable, never a command's failure; a missing bwrap
// fails New.
func TestUnavailable(t *testing.T) {
	if _, err := New(Options{Bwrap: filepath.Join(t.TempDir(), "bwrap")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("New without bwrap: %v, want ErrUnavailable", err)
	}
	box := newSandbox(t, Options{})
	out, err := run(t, box, Command{Args: []string{"true"}, Binds: []Bind{{Source: filepath.Join(t.TempDir(), "missing"), Target: "/etc/x"}}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("bind of a missing file: %v (%s), want ErrUnavailable", err, out)
	}
	if err := box.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// Cancelling kills the command and returns the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- box.Run(ctx, Command{Args: []string{"sleep", "600"}}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled run: %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("a cancelled run did not end")
	}
}
