package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
