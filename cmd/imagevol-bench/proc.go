package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// workerPID reads the pid of a host's worker from <run-dir>/pids/worker-<host>.pid and checks
// that it is alive.
func workerPID(runDir, host string) (int, error) {
	f := filepath.Join(runDir, "pids", "worker-"+host+".pid")
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, fmt.Errorf("worker %s: %w", host, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("worker %s: bad pid file %s: %w", host, f, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/status", pid)); err != nil {
		return 0, fmt.Errorf("worker %s: pid %d is not running", host, pid)
	}
	return pid, nil
}

// resetPeakRSS resets the process's VmHWM to its current RSS (clear_refs value 5).
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSSMiB reads the process's VmHWM, its peak resident set since start or the last reset.
func peakRSSMiB(pid int) (float64, error) {
	kb, err := procField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM:")
	if err != nil {
		return 0, err
	}
	return float64(kb) / 1024, nil
}

// procField reads the number after key in a /proc file of "key: N kB" lines.
func procField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == key {
			return strconv.ParseInt(fields[1], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// freeBytes is the space available to unprivileged writers on the file system holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// gitCommit returns HEAD's commit and whether the work tree has changes ("" when not in git).
func gitCommit(ctx context.Context) (string, bool) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false
	}
	st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(out)), err == nil && len(strings.TrimSpace(string(st))) > 0
}

// cpuSnapshot is every process's CPU time (user + system, in clock ticks) and the machine's
// busy time, at one moment.
type cpuSnapshot struct {
	procs map[int]procCPU
	busy  uint64 // ticks of /proc/stat's cpu line that are not idle or iowait
}

type procCPU struct {
	name  string
	ticks uint64
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux for every architecture
// Go supports here).
const clockTicks = 100

func takeCPUSnapshot() cpuSnapshot {
	s := cpuSnapshot{procs: map[int]procCPU{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			n, _ := strconv.ParseUint(f, 10, 64)
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ..."; comm may hold spaces, so split after its last ')'.
		st := string(b)
		open, closing := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(st[closing+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		stt, _ := strconv.ParseUint(f[12], 10, 64)
		s.procs[pid] = procCPU{name: st[open+1 : closing], ticks: ut + stt}
	}
	return s
}

// cpuUse says where the CPU went between two snapshots: busy core-seconds of the whole machine,
// their share of what its cores could give in that wall time, and the biggest consumers by
// process name (processes that started in between count from zero).
func cpuUse(before, after cpuSnapshot, wall float64, top int) *CPUUse {
	u := &CPUUse{CoreSeconds: round(float64(after.busy-before.busy)/clockTicks, 2)}
	if wall > 0 {
		u.Utilization = round(u.CoreSeconds/(wall*float64(runtime.NumCPU())), 2)
	}
	byName := ticksBy(before, after, func(name string) string { return name })
	for name, t := range byName {
		u.Top = append(u.Top, ProcessCPU{Name: name, CoreSeconds: round(float64(t)/clockTicks, 2)})
	}
	slices.SortFunc(u.Top, func(x, y ProcessCPU) int { return cmp.Compare(y.CoreSeconds, x.CoreSeconds) })
	if len(u.Top) > top {
		u.Top = u.Top[:top]
	}
	return u
}

// ticksBy sums the CPU ticks each process used between two snapshots by key(its name); a process
// that started in between counts from zero.
func ticksBy(before, after cpuSnapshot, key func(name string) string) map[string]uint64 {
	out := map[string]uint64{}
	for pid, a := range after.procs {
		b := before.procs[pid]
		if b.name != a.name {
			b.ticks = 0 // a new process under a reused pid
		}
		if a.ticks > b.ticks {
			out[key(a.name)] += a.ticks - b.ticks
		}
	}
	return out
}
