package activities

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/sandbox"
	"github.com/imagevol/imagevol/storage/rbd"
)

// Where the sandbox shows qemu-img its Ceph client's files.
const (
	sandboxCephConf = "/etc/ceph/ceph.conf"
	sandboxKeyring  = "/etc/ceph/keyring"
)

// resolverFiles are what a name in mon_host needs to be looked up inside the sandbox.
var resolverFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf"}

// Converter runs one host's qemu-img conversions from RBD to RBD: in the sandbox (package
// sandbox), so that a crafted image that slipped past the inspector still cannot make qemu-img
// read a host file, and at most Config.MaxConcurrentConversions at a time.
type Converter struct {
	cfg   Config
	box   *sandbox.Sandbox
	slots chan struct{} // nil: no cap
}

// NewConverter makes the converter of cfg. It fails with sandbox.ErrUnavailable when the
// sandbox is enabled but bwrap is missing: conversions never silently run unconfined.
func NewConverter(cfg Config) (*Converter, error) {
	box, err := sandbox.New(sandbox.Options{Disabled: cfg.SandboxDisabled,
		Limits: sandbox.Limits{CPUTime: cfg.SandboxCPUTime, AddressSpace: int64(cfg.SandboxMemoryMB) << 20}})
	if err != nil {
		return nil, fmt.Errorf("qemu-img converter: %w", err)
	}
	c := &Converter{cfg: cfg, box: box}
	if cfg.MaxConcurrentConversions > 0 {
		c.slots = make(chan struct{}, cfg.MaxConcurrentConversions)
	}
	return c, nil
}

// Check proves that the sandbox works on this host and that qemu-img and the Ceph client's
// files are there; a worker runs it before it takes any step.
func (c *Converter) Check(ctx context.Context) error {
	if err := c.box.Check(ctx); err != nil {
		return fmt.Errorf("qemu-img converter: %w", err)
	}
	cmd, err := c.command("raw", "-", "-", "-")
	if err != nil {
		return fmt.Errorf("qemu-img converter: %w", err)
	}
	var out strings.Builder
	cmd.Args, cmd.Stdout, cmd.Stderr = []string{"qemu-img", "--version"}, &out, &out
	if err := c.box.Run(ctx, cmd); err != nil {
		return fmt.Errorf("qemu-img converter: qemu-img --version: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Sandboxed reports whether conversions run in the sandbox.
func (c *Converter) Sandboxed() bool { return c.box.Enabled() }

// Convert runs qemu-img from one RBD image to another, heartbeating while it waits for a slot
// and while it works. The source format is passed explicitly so qemu-img never probes.
func (c *Converter) Convert(ctx context.Context, format, pool, src, dst string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	cmd, err := c.command(format, pool, src, dst)
	if err != nil {
		return err
	}
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	go func() { done <- c.box.Run(ctx, cmd) }()
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			var exit *sandbox.ExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &exit):
				lim := c.box.Limits()
				return nonRetryable(contract.ErrTypeCorruptImage, "qemu-img convert of a %s image failed: %v (limits: %s CPU, %d MiB address space): %s",
					format, err, lim.CPUTime, lim.AddressSpace>>20, out.String())
			default:
				// The sandbox could not be set up, or the step was cancelled: not the image's fault.
				return fmt.Errorf("qemu-img convert: %w", err)
			}
		case <-tick.C:
			heartbeat(ctx, "converting")
		}
	}
}

// acquire takes a conversion slot, heartbeating while it waits.
func (c *Converter) acquire(ctx context.Context) error {
	if c.slots == nil {
		return nil
	}
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case c.slots <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			heartbeat(ctx, "waiting for a conversion slot")
		}
	}
}

func (c *Converter) release() {
	if c.slots != nil {
		<-c.slots
	}
}

// command is qemu-img convert with its rbd: specs and, in the sandbox, the Ceph client's files:
// a ceph.conf written here with only the monitors, the auth mode and the keyring's path inside
// (no admin socket, no log file: nothing of the host's paths), and the keyring itself.
func (c *Converter) command(format, pool, src, dst string) (sandbox.Command, error) {
	conf, keyring := c.cfg.CephConf, c.cfg.CephKeyring
	var cmd sandbox.Command
	if c.box.Enabled() {
		s, err := rbd.ReadClientSettings(c.cfg.CephConf, c.cfg.CephUser, c.cfg.CephKeyring)
		if err != nil {
			return sandbox.Command{}, err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "[global]\nmon_host = %s\n", s.MonHost)
		if s.AuthClientRequired != "" {
			fmt.Fprintf(&b, "auth_client_required = %s\n", s.AuthClientRequired)
		}
		if s.Keyring != "" {
			// Given as data: the sandbox's user cannot read the worker's keyring file itself.
			key, err := os.ReadFile(s.Keyring)
			if err != nil {
				return sandbox.Command{}, fmt.Errorf("ceph keyring: %w", err)
			}
			fmt.Fprintf(&b, "keyring = %s\n", sandboxKeyring)
			cmd.Files = append(cmd.Files, sandbox.File{Target: sandboxKeyring, Data: key})
		}
		b.WriteString("admin_socket =\nlog_file =\n")
		cmd.Files = append(cmd.Files, sandbox.File{Target: sandboxCephConf, Data: []byte(b.String())})
		if monHostHasNames(s.MonHost) {
			for _, f := range resolverFiles {
				if _, err := os.Stat(f); err == nil {
					cmd.Binds = append(cmd.Binds, sandbox.Bind{Source: f, Target: f})
				}
			}
		}
		conf, keyring = sandboxCephConf, ""
	}
	spec := func(name string) string {
		s := "rbd:" + pool + "/" + name
		if conf != "" {
			s += ":conf=" + conf
		}
		if c.cfg.CephUser != "" {
			s += ":id=" + c.cfg.CephUser
		}
		if keyring != "" {
			s += ":keyring=" + keyring
		}
		return s
	}
	// glibc reserves 64 MiB of address space per malloc arena, up to 8 per core: with librbd's
	// threads that is most of qemu-img's address space. Two arenas keep it near 650 MiB for a
	// conversion, well inside the address-space limit, on any number of cores.
	cmd.Env = []string{"MALLOC_ARENA_MAX=2"}
	cmd.Args = []string{"qemu-img", "convert", "-f", format, "-O", "raw", "-W", "-m", "16", spec(src), spec(dst)}
	return cmd, nil
}

// monHostHasNames reports whether mon_host names a monitor by host name rather than address.
// Its forms: "10.0.0.1,10.0.0.2:6789", "[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0] [v2:...]",
// IPv6 in brackets, names.
func monHostHasNames(monHost string) bool {
	for _, a := range strings.FieldsFunc(monHost, func(r rune) bool { return strings.ContainsRune(", ;\t", r) }) {
		if strings.HasPrefix(a, "[v") {
			a = a[1:] // a monitor's group of addresses
		}
		if strings.Count(a, "]") > strings.Count(a, "[") {
			a = strings.TrimSuffix(a, "]")
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "v1:"), "v2:")
		if i := strings.LastIndex(a, "/"); i >= 0 { // a nonce
			a = a[:i]
		}
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		if net.ParseIP(host) == nil {
			return true
		}
	}
	return false
}

// converter is the Activities' converter: Activities.Converter, else one made from Config on
// first use.
func (a *Activities) converter() (*Converter, error) {
	if a.Converter != nil {
		return a.Converter, nil
	}
	a.convOnce.Do(func() { a.conv, a.convErr = NewConverter(a.Config) })
	return a.conv, a.convErr
}

// convert runs one conversion of an import through the host's converter.
func (a *Activities) convert(ctx context.Context, format, pool, src, dst string) error {
	c, err := a.converter()
	if err != nil {
		return err
	}
	return c.Convert(ctx, format, pool, src, dst)
}

// tail keeps the last 4 KiB of qemu-img's output for the error message.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 4096; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
