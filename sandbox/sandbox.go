// Package sandbox runs an untrusted-input tool (qemu-img on a tenant's image) so that a bug in
// the tool or in what checked its input cannot reach the host: the command runs under
// bubblewrap (bwrap) in new mount, PID, IPC, UTS and user namespaces, as an unprivileged user
// with no capabilities, in a new session, killed with its parent, with a cleared environment
// and CPU-time, address-space and core-size limits (set by util-linux's prlimit before bwrap
// starts, so they hold from the first instruction).
//
// It imports none of imagevol's packages.
//
// A caller running as root starts bwrap as nobody (uid and gid 65534), so the command is an
// unprivileged user to the host kernel too; host files it is to read must then be given as
// data (File) or be readable by anyone (Bind).
//
// Its filesystem is built from nothing: read-only /usr (and the /bin, /sbin, /lib* of the host,
// as the symlinks or directories they are), /etc/ld.so.cache for the dynamic loader, a minimal
// /dev, a private /proc, a small private /tmp, and exactly the files the caller names, read-only.
// The network is shared: librbd must reach the Ceph monitors and OSDs.
package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUnavailable means the sandbox cannot run commands (bwrap or prlimit missing, or the kernel
// refuses the namespaces): callers must not fall back to running unsandboxed.
var ErrUnavailable = errors.New("sandbox unavailable")

// Defaults of Limits. qemu-img converting a 1 GiB qcow2 from RBD to RBD peaked at 650 MiB of
// address space (with MALLOC_ARENA_MAX=2; 1.5 GiB without) and used about 1.1 CPU-seconds: an
// hour of CPU covers images of hundreds of GiB even on a slow machine.
const (
	DefaultCPUTime      = time.Hour
	DefaultAddressSpace = int64(4) << 30
)

// tmpSize bounds the private /tmp: nothing the sandboxed tools do needs scratch space there,
// and a tmpfs is memory that no rlimit counts.
const tmpSize = 64 << 20

// nobody is the unprivileged user and group the command runs as inside the sandbox, and, when
// the caller is root, outside too.
const (
	nobodyID = 65534
	nobody   = "65534"
)

// Limits bound one command. Zero values mean the defaults, never unlimited.
type Limits struct {
	CPUTime      time.Duration // RLIMIT_CPU, rounded up to whole seconds
	AddressSpace int64         // RLIMIT_AS in bytes
}

func (l Limits) withDefaults() Limits {
	if l.CPUTime <= 0 {
		l.CPUTime = DefaultCPUTime
	}
	if l.AddressSpace <= 0 {
		l.AddressSpace = DefaultAddressSpace
	}
	return l
}

// Options configure a Sandbox.
type Options struct {
	// Disabled runs commands directly on the host, with the cleared environment and the limits
	// but without namespaces: for development machines without bwrap only. A tool that follows a
	// reference inside a crafted image can then read any file the worker can.
	Disabled bool
	Limits   Limits
	// Bwrap and Prlimit are the programs to use; empty: looked up in PATH.
	Bwrap, Prlimit string
}

// Sandbox runs commands under the same confinement. It holds no state between runs.
type Sandbox struct {
	disabled       bool
	limits         Limits
	bwrap, prlimit string
}

// New finds the programs the sandbox needs. It fails with ErrUnavailable when one is missing,
// unless the sandbox is disabled (then only prlimit is needed).
func New(opts Options) (*Sandbox, error) {
	s := &Sandbox{disabled: opts.Disabled, limits: opts.Limits.withDefaults()}
	var err error
	if s.prlimit, err = exec.LookPath(or(opts.Prlimit, "prlimit")); err != nil {
		return nil, fmt.Errorf("%w: prlimit (util-linux) not found: %v", ErrUnavailable, err)
	}
	if s.disabled {
		return s, nil
	}
	if s.bwrap, err = exec.LookPath(or(opts.Bwrap, "bwrap")); err != nil {
		return nil, fmt.Errorf("%w: bwrap not found (install Debian's bubblewrap package): %v", ErrUnavailable, err)
	}
	return s, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Enabled reports whether commands run inside namespaces, so that callers know whether to name
// files by their paths inside the sandbox or on the host.
func (s *Sandbox) Enabled() bool { return !s.disabled }

// Limits returns the limits every command runs under.
func (s *Sandbox) Limits() Limits { return s.limits }

// Bind shows the host file or directory Source read-only at Target inside the sandbox. bwrap
// runs as the unprivileged user (see the package comment): Source must be readable by it.
type Bind struct{ Source, Target string }

// File shows Data as a read-only file at Target inside the sandbox.
type File struct {
	Target string
	Data   []byte
}

// Command is one program to run in the sandbox.
type Command struct {
	Args  []string // program and arguments; the program is looked up in the sandbox's PATH
	Env   []string // KEY=VALUE added to the cleared environment (PATH and LANG=C)
	Binds []Bind
	Files []File
	// Stdout and Stderr receive the program's output; nil discards it.
	Stdout, Stderr io.Writer
}

// baseEnv is all the environment a sandboxed command starts with.
var baseEnv = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"}

// hostRoots are top-level entries a program and its libraries are found under. On a merged-/usr
// system (Debian 12) all but /usr are symlinks into it.
var hostRoots = []string{"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"}

// ExitError is a command that ran in the sandbox and failed.
type ExitError struct {
	Code int // exit status; 128+N for signal N
}

func (e *ExitError) Error() string {
	if e.Code > 128 {
		return fmt.Sprintf("killed by signal %d", e.Code-128)
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Check runs `true` in the sandbox: it fails with ErrUnavailable when the kernel or a service
// manager's restrictions keep bwrap from setting up the namespaces.
func (s *Sandbox) Check(ctx context.Context) error {
	var out bytes.Buffer
	err := s.Run(ctx, Command{Args: []string{"true"}, Stdout: &out, Stderr: &out})
	var exit *ExitError
	if errors.As(err, &exit) {
		return fmt.Errorf("%w: true failed in the sandbox: %v: %s", ErrUnavailable, err, strings.TrimSpace(out.String()))
	}
	return err
}

// Run runs c and waits for it. A command that ran and failed returns an *ExitError; a sandbox
// that could not be set up returns an error wrapping ErrUnavailable. Cancelling ctx kills the
// command and everything it started.
func (s *Sandbox) Run(ctx context.Context, c Command) error {
	if len(c.Args) == 0 {
		return errors.New("sandbox: no command")
	}
	if s.disabled {
		return s.runDirect(ctx, c)
	}
	args := s.limitArgs()
	args = append(args, s.bwrap)
	// extra are the child's ends of the pipes, writers the caller's ends of the Files' pipes;
	// whatever is still listed when Run returns is closed.
	var extra, writers []*os.File
	defer func() {
		for _, f := range append(extra, writers...) {
			f.Close()
		}
	}()
	// Descriptors the child gets: ExtraFiles[i] is fd 3+i.
	nextFD := func(f *os.File) string {
		extra = append(extra, f)
		return strconv.Itoa(2 + len(extra))
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	args = append(args, "--json-status-fd", nextFD(statusW))

	args = append(args,
		"--unshare-user", "--uid", nobody, "--gid", nobody, "--disable-userns", "--cap-drop", "ALL",
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
		"--new-session", "--die-with-parent", "--clearenv",
		"--ro-bind", "/usr", "/usr",
	)
	for _, root := range hostRoots {
		fi, err := os.Lstat(root)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(root)
			if err != nil {
				return fmt.Errorf("sandbox: %w", err)
			}
			args = append(args, "--symlink", target, root)
		case fi.IsDir():
			args = append(args, "--ro-bind", root, root)
		}
	}
	args = append(args, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
		"--dev", "/dev", "--proc", "/proc", "--size", strconv.Itoa(tmpSize), "--tmpfs", "/tmp", "--chdir", "/tmp")
	for _, b := range c.Binds {
		args = append(args, "--ro-bind", b.Source, b.Target)
	}
	for _, f := range c.Files {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		writers = append(writers, w)
		args = append(args, "--perms", "0444", "--ro-bind-data", nextFD(r), f.Target)
	}
	for _, kv := range append(append([]string{}, baseEnv...), c.Env...) {
		k, v, _ := strings.Cut(kv, "=")
		args = append(args, "--setenv", k, v)
	}
	args = append(args, "--")
	args = append(args, c.Args...)

	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = baseEnv // bwrap itself never sees the caller's environment either
	cmd.ExtraFiles = extra
	if os.Geteuid() == 0 {
		// bwrap started by root maps the sandbox's user to root outside: to the kernel the
		// command would still be uid 0 (host sysctls, abstract sockets trusting uid 0). Started
		// as nobody, it is nobody inside and out.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID, Groups: []uint32{}}}
	}
	var tail tailBuffer
	cmd.Stdout, cmd.Stderr = nonNil(c.Stdout), io.MultiWriter(nonNil(c.Stderr), &tail)
	if c.Stdout == c.Stderr {
		// One writer for both, so that exec copies them with one goroutine in order.
		w := io.MultiWriter(nonNil(c.Stdout), &tail)
		cmd.Stdout, cmd.Stderr = w, w
	}
	cmd.WaitDelay = 10 * time.Second
	closeInherited()
	if err := cmd.Start(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	// The child holds its copies; closing ours lets the pipes end when it exits.
	for _, f := range extra {
		f.Close()
	}
	extra = nil
	for i, w := range writers {
		go func(w *os.File, data []byte) {
			_, _ = w.Write(data) // bwrap reads it all during setup; a failed setup closes the pipe
			w.Close()
		}(w, c.Files[i].Data)
	}
	writers = nil
	status, _ := io.ReadAll(statusR)
	waitErr := cmd.Wait()
	code, exited := parseStatus(status)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case exited && code != 0:
		return &ExitError{Code: code}
	case exited || waitErr == nil:
		return waitErr
	}
	// bwrap reports the command's exit only once it ran: no report is a failed setup (a mount,
	// a namespace, or a program that cannot be executed).
	return fmt.Errorf("%w: bwrap could not run the command: %v: %s", ErrUnavailable, waitErr, tail.String())
}

// limitArgs is prlimit's part of the command line; prlimit sets the limits on itself and then
// runs what follows, so every process of the sandbox inherits them.
func (s *Sandbox) limitArgs() []string {
	cpu := int64((s.limits.CPUTime + time.Second - 1) / time.Second)
	return []string{s.prlimit,
		"--cpu=" + strconv.FormatInt(cpu, 10),
		"--as=" + strconv.FormatInt(s.limits.AddressSpace, 10),
		"--core=0", "--"}
}

// runDirect is the disabled sandbox: the limits and the cleared environment only.
func (s *Sandbox) runDirect(ctx context.Context, c Command) error {
	args := append(s.limitArgs(), c.Args...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(append([]string{}, baseEnv...), c.Env...)
	cmd.Dir = os.TempDir()
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &ExitError{Code: exitCode(err)}
	}
	return err
}

// parseStatus reads bwrap's --json-status-fd stream: one JSON object once the child is made
// ("child-pid"), another with the command's status when it ended ("exit-code").
func parseStatus(b []byte) (code int, exited bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return code, exited
		}
		if c, ok := m["exit-code"].(float64); ok {
			code, exited = int(c), true
		}
	}
}

func exitCode(err error) int {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return -1
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return exit.ExitCode()
}

// closeInherited marks every descriptor above stderr close-on-exec. Go opens its own that way,
// but a descriptor the worker inherited without the flag would pass through bwrap into the
// sandbox, and a directory descriptor there is a way out of its mount namespace.
func closeInherited() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

func nonNil(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// tailBuffer keeps the last 4 KiB written to it, for error messages.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 4096; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
