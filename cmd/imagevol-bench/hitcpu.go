package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Process groups of cpu_ms_per_hit: the parts of the stack a hit costs CPU in.
const (
	groupTemporal = "temporal" // imagevol-devserver or temporal-server
	groupWorkers  = "workers"  // imagevol-worker
	groupGateway  = "gateway"  // imagevol-gateway
	groupDatabase = "database" // mariadbd: imagevol's rows
	groupPostgres = "postgres" // the standalone Temporal server's store
	groupOSD      = "ceph-osd"
	groupMon      = "ceph-mon"
	groupBench    = "bench" // imagevol-bench itself: the requests and status polls
	groupOther    = "other" // everything else on the machine, other users' work included
	groupTotal    = "total" // the machine's busy CPU (/proc/stat), whatever ran it
)

// cpuGroups is the order the groups are shown in.
var cpuGroups = []string{groupTemporal, groupWorkers, groupGateway, groupDatabase, groupPostgres,
	groupOSD, groupMon, groupBench, groupOther, groupTotal}

// processGroup names the group of a process by its /proc comm, which the kernel cuts to 15
// bytes ("imagevol-devser", "imagevol-gatewa").
func processGroup(comm string) string {
	switch {
	case strings.HasPrefix(comm, "imagevol-devser"), comm == "temporal-server":
		return groupTemporal
	case comm == "imagevol-worker":
		return groupWorkers
	case strings.HasPrefix(comm, "imagevol-gatewa"):
		return groupGateway
	case comm == "mariadbd", comm == "mysqld":
		return groupDatabase
	case comm == "postgres":
		return groupPostgres
	case comm == "ceph-osd":
		return groupOSD
	case comm == "ceph-mon":
		return groupMon
	case comm == "imagevol-bench":
		return groupBench
	}
	return groupOther
}

// cpuPerHit divides the CPU used between two snapshots by the hits completed meanwhile: ms of
// CPU per hit by process group, and the machine's busy total. Groups that used nothing are left
// out; nil when no hit completed.
func cpuPerHit(before, after cpuSnapshot, hits int) map[string]float64 {
	if hits <= 0 {
		return nil
	}
	ticks := ticksBy(before, after, processGroup)
	ticks[groupTotal] = after.busy - before.busy
	out := map[string]float64{}
	for g, t := range ticks {
		if t > 0 {
			out[g] = round(float64(t)*1000/clockTicks/float64(hits), 2)
		}
	}
	return out
}

// cpuLine is a cpu_ms_per_hit map on one line, in cpuGroups' order, for latest.md.
func cpuLine(m map[string]float64) string {
	if len(m) == 0 {
		return "null"
	}
	var parts []string
	for _, g := range cpuGroups {
		if v, ok := m[g]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", g, v))
		}
	}
	for _, g := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(cpuGroups, g) {
			parts = append(parts, fmt.Sprintf("%s %.1f", g, m[g]))
		}
	}
	return strings.Join(parts, " · ") + " ms"
}
