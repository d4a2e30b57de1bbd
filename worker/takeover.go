package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// ErrTypeWorkerGone is the (retryable) failure a restarted worker gives the steps its dead
// predecessor was running, so that they run again at once instead of after their heartbeat
// timeout.
const ErrTypeWorkerGone = "WorkerGone"

// identityPrefix starts the Temporal identity of every host worker process: the identity names
// the storage host, the machine and the process, so that a restarted worker can tell which
// running steps belonged to a process of its own host and machine that is gone.
const identityPrefix = "imagevol-worker:"

// HostIdentity is the Temporal worker identity of a storage host's worker process; cephAddr,
// when known, is the address of its Ceph client, which a successor fences after a crash.
func HostIdentity(host, machine string, pid int, cephAddr string) string {
	id := identityPrefix + host + "@" + machine + ":" + strconv.Itoa(pid)
	if cephAddr != "" {
		id += "#" + cephAddr
	}
	return id
}

// parseIdentity splits an identity made by HostIdentity; ok is false for any other identity.
func parseIdentity(id string) (host, machine string, pid int, cephAddr string, ok bool) {
	rest, ok := strings.CutPrefix(id, identityPrefix)
	if !ok {
		return "", "", 0, "", false
	}
	rest, cephAddr, _ = strings.Cut(rest, "#")
	at := strings.LastIndex(rest, "@")
	colon := strings.LastIndex(rest, ":")
	if at <= 0 || colon < at {
		return "", "", 0, "", false
	}
	pid, err := strconv.Atoi(rest[colon+1:])
	if err != nil || pid <= 0 {
		return "", "", 0, "", false
	}
	return rest[:at], rest[at+1 : colon], pid, cephAddr, true
}

// processAlive reports whether pid runs a program whose command line names the worker: a
// reused pid of some other program does not count.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), "imagevol-worker")
}

// maxTakeoverScan bounds how many running workflows one takeover looks at.
const maxTakeoverScan = 5000

// takeOver fails, as retryable, every step that a dead worker process of the same host on this
// machine was running when it died. Temporal would notice only when the step's heartbeat times
// out; a worker restarted after a crash knows sooner, and the step's retry resumes from its last
// heartbeat (a download from its durable offset) on this worker a second later. Before that it
// fences the dead process's Ceph client (fence, when set): the images it had open for writing
// keep their exclusive locks until its watches time out, about 30 s, unless it is blocklisted.
// It returns how many steps it failed. Steps of live processes, of other hosts and of other
// machines are left alone: only their heartbeat timeout can tell whether they are gone.
func takeOver(ctx context.Context, c client.Client, namespace, host, machine string, self int, alive func(int) bool,
	fence func(addr string) error, log *slog.Logger) (int, error) {
	failed, scanned := 0, 0
	fenced := map[string]bool{}
	var token []byte
	for scanned < maxTakeoverScan {
		page, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: namespace, PageSize: 100, NextPageToken: token,
			Query: "ExecutionStatus = 'Running'",
		})
		if err != nil {
			return failed, fmt.Errorf("worker: list running workflows: %w", err)
		}
		for _, ex := range page.Executions {
			scanned++
			wid, rid := ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId()
			desc, err := c.DescribeWorkflowExecution(ctx, wid, rid)
			if err != nil {
				log.Warn("takeover: describe workflow", "workflow_id", wid, "err", err)
				continue
			}
			for _, pa := range desc.GetPendingActivities() {
				if pa.GetState() != enumspb.PENDING_ACTIVITY_STATE_STARTED {
					continue
				}
				h, m, pid, addr, ok := parseIdentity(pa.GetLastWorkerIdentity())
				if !ok || h != host || m != machine || pid == self || alive(pid) {
					continue
				}
				if fence != nil && addr != "" && !fenced[addr] {
					fenced[addr] = true
					if err := fence(addr); err != nil {
						log.Warn("takeover: could not fence the dead worker's Ceph client; its image locks expire by themselves",
							"dead_pid", pid, "ceph_addr", addr, "err", err)
					} else {
						log.Info("takeover: fenced the dead worker's Ceph client", "dead_pid", pid, "ceph_addr", addr)
					}
				}
				cause := temporal.NewApplicationError(fmt.Sprintf("worker process %d of host %s is gone; retried by its successor", pid, host), ErrTypeWorkerGone)
				if err := c.CompleteActivityByID(ctx, namespace, wid, rid, pa.GetActivityId(), nil, cause); err != nil {
					// The step may have finished or timed out meanwhile: nothing to take over.
					log.Info("takeover: step not failed", "workflow_id", wid, "activity", pa.GetActivityType().GetName(), "err", err)
					continue
				}
				failed++
				log.Info("takeover: step of a dead worker retried", "workflow_id", wid, "activity", pa.GetActivityType().GetName(),
					"attempt", pa.GetAttempt(), "dead_pid", pid)
			}
		}
		token = page.NextPageToken
		if len(token) == 0 {
			break
		}
	}
	return failed, nil
}

// DeadWriterFence returns a function that fences the Ceph client of a download's previous writer
// (an identity made by HostIdentity) if that writer is a worker process of this host on this
// machine that is gone; for any other writer it does nothing, since only a heartbeat timeout can
// tell whether a process elsewhere is gone, and fencing a live one stops all of its I/O.
func DeadWriterFence(host, machine string, self int, fence func(addr string) error, log *slog.Logger) func(writer string) {
	return func(writer string) {
		h, m, pid, addr, ok := parseIdentity(writer)
		if !ok || h != host || m != machine || pid == self || addr == "" || processAlive(pid) {
			return
		}
		if err := fence(addr); err != nil {
			log.Warn("could not fence a dead writer's Ceph client; its image lock expires by itself", "dead_pid", pid, "ceph_addr", addr, "err", err)
			return
		}
		log.Info("fenced a dead writer's Ceph client", "dead_pid", pid, "ceph_addr", addr)
	}
}
