package main

import (
	"fmt"
	"time"
)

// Stage is one step of a miss done alone, as a floor: its wall time and the busy core-seconds
// of the whole machine meanwhile (every process, kernel threads included).
type Stage struct {
	Name  string  `json:"name"`
	MiB   float64 `json:"mib"`    // bytes the stage moved
	WallS float64 `json:"wall_s"` // its wall time
	CoreS float64 `json:"core_s"` // machine-wide busy core-seconds during it
}

// timeStage runs f as a stage: its wall time and the machine's CPU meanwhile. f returns the
// bytes it moved.
func timeStage(name string, f func() (int64, error)) (Stage, error) {
	cpu0 := takeCPUSnapshot()
	t0 := time.Now()
	n, err := f()
	wall := time.Since(t0).Seconds()
	use := cpuUse(cpu0, takeCPUSnapshot(), wall, 0)
	return Stage{Name: name, MiB: round(float64(n)/float64(mib), 1), WallS: round(wall, 3), CoreS: use.CoreSeconds}, err
}

// stageMiBs is a stage's rate in MiB/s.
func stageMiBs(s Stage) float64 {
	if s.WallS <= 0 {
		return 0
	}
	return round(s.MiB/s.WallS, 1)
}

// Bound is the shortest time a pipeline of stages can take on a machine: they overlap at best
// perfectly, so it takes at least as long as its slowest stage alone, and their CPU work
// shares the machine's cores, so at least their core-seconds ÷ cores.
type Bound struct {
	Seconds float64 `json:"s"`
	By      string  `json:"by"` // what sets it: "wall of <stage>" or "CPU (x core-s / n cores)"
}

// pipelineBound is the Bound of stages that may all run at once.
func pipelineBound(stages []Stage, cores int) Bound {
	var b Bound
	var sum float64
	for _, s := range stages {
		sum += s.CoreS
		if s.WallS > b.Seconds {
			b = Bound{Seconds: s.WallS, By: "wall of " + s.Name}
		}
	}
	if cores > 0 && sum/float64(cores) > b.Seconds {
		b = Bound{Seconds: sum / float64(cores), By: fmt.Sprintf("CPU (%.2f core-s / %d cores)", sum, cores)}
	}
	b.Seconds = round(b.Seconds, 3)
	return b
}

// serialBound is the Bound of pipelines that run one after the other (a conversion can only start
// once its input is downloaded and verified).
func serialBound(parts ...Bound) Bound {
	var b Bound
	for i, p := range parts {
		b.Seconds += p.Seconds
		if i > 0 {
			b.By += " + "
		}
		b.By += p.By
	}
	b.Seconds = round(b.Seconds, 3)
	return b
}

// fixedCostMs is what a miss costs beyond streaming its bytes: a small miss's time minus the
// time its bytes take at the rate of a large one, in milliseconds.
func fixedCostMs(smallS float64, smallBytes int64, largeS float64, largeBytes int64) float64 {
	if largeS <= 0 || largeBytes <= 0 {
		return 0
	}
	stream := float64(smallBytes) / (float64(largeBytes) / largeS)
	return round((smallS-stream)*1000, 1)
}
