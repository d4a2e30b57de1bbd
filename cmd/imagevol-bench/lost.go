package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// LostResults is the check that no step's result was lost in a window: from the histories of
// every workflow the window started, the attempts that timed out, failed or had to be repeated;
// from the SDK's metrics of the workers and the gateway, the failure counters' increase; from
// their logs, the lines that say an RPC to Temporal failed. Every count should be 0.
type LostResults struct {
	Workflows            int `json:"workflows"`               // histories read
	HistoriesNotRead     int `json:"histories_not_read"`      // … and those that could not be
	NotCompleted         int `json:"workflows_not_completed"` // closed otherwise than completed, or still open
	ActivityTimedOut     int `json:"activity_timed_out"`
	ActivityFailed       int `json:"activity_failed"`
	ActivityRetried      int `json:"activities_retried"` // activities whose recorded attempt is above 1
	ExtraAttempts        int `json:"extra_attempts"`
	WorkflowTaskTimedOut int `json:"workflow_task_timed_out"`
	WorkflowTaskFailed   int `json:"workflow_task_failed"`
	LocalActivityFailed  int `json:"local_activity_failed"`
	// SDKCounters is the increase of the SDK's failure counters over the window, summed over
	// the scraped processes, by family and operation; only those that rose. Nil: not scraped.
	SDKCounters map[string]float64 `json:"sdk_counters"`
	// LogLines counts, by file and pattern, the log lines of the window that match an RPC
	// failure pattern. Nil: no log read.
	LogLines map[string]int `json:"log_lines"`
	LogsRead []string       `json:"logs_read"` // the logs' file names
	// HistoriesSaved are the histories of a few flagged workflows, relative to the results.
	HistoriesSaved []string `json:"histories_saved,omitempty"`
	Samples        []string `json:"samples,omitempty"` // a few of the failures and log lines
}

// Total is the sum of every counter that should be 0.
func (l *LostResults) Total() int { return l.HistoryTotal() + l.SDKTotal() + l.LogTotal() }

// SDKTotal is the rise of the SDK's failure counters.
func (l *LostResults) SDKTotal() int {
	n := 0.0
	for _, v := range l.SDKCounters {
		n += v
	}
	return int(n)
}

// LogTotal is the count of matching log lines (a line may match more than one pattern).
func (l *LostResults) LogTotal() int {
	n := 0
	for _, v := range l.LogLines {
		n += v
	}
	return n
}

// observation is where a window starts: the SDK counters and how far each log was written.
type observation struct {
	counters map[string]float64 // nil when no metrics endpoint answered
	logSize  map[string]int64
}

// observe notes the SDK's failure counters and the logs' sizes now.
func (b *bench) observe(ctx context.Context) observation {
	o := observation{logSize: map[string]int64{}}
	o.counters = b.scrapeCounters(ctx)
	for _, p := range b.logFiles() {
		if st, err := os.Stat(p); err == nil {
			o.logSize[p] = st.Size()
		}
	}
	return o
}

// lostResults checks the workflows ids (their histories in facts) and the counters and logs
// since o.
func (b *bench) lostResults(ctx context.Context, o observation, ids []string, facts map[string]histFacts) *LostResults {
	l := &LostResults{}
	for _, id := range ids {
		f, ok := facts[id]
		if !ok {
			l.HistoriesNotRead++
			continue
		}
		l.Workflows++
		if !f.Completed() {
			l.NotCompleted++
			l.sample("workflow %s closed as %q", id, f.CloseType)
		}
		l.ActivityTimedOut += f.ActivityTimedOut
		l.ActivityFailed += f.ActivityFailed
		l.ActivityRetried += f.ActivityRetried
		l.ExtraAttempts += f.ExtraAttempts
		l.WorkflowTaskTimedOut += f.WorkflowTaskTimedOut
		l.WorkflowTaskFailed += f.WorkflowTaskFailed
		l.LocalActivityFailed += f.LocalActivityFailed
		for _, s := range f.Failures {
			l.sample("workflow %s: %s", id, s)
		}
	}
	if o.counters != nil {
		if now := b.scrapeCounters(ctx); now != nil {
			l.SDKCounters = counterRise(o.counters, now)
		}
	}
	if len(o.logSize) > 0 {
		l.LogLines = map[string]int{}
	}
	for _, path := range slices.Sorted(maps.Keys(o.logSize)) {
		b.scanLog(l, path, o.logSize[path])
		l.LogsRead = append(l.LogsRead, filepath.Base(path))
	}
	return l
}

func (l *LostResults) sample(format string, args ...any) {
	if len(l.Samples) < 8 {
		l.Samples = append(l.Samples, fmt.Sprintf(format, args...))
	}
}

// sdkFailureFamilies are the Temporal SDK's counters of failed RPCs, tasks and attempts, as the
// metrics package exposes them.
var sdkFailureFamilies = []string{
	"temporal_request_failure_total",
	"temporal_long_request_failure_total",
	"temporal_request_resource_exhausted_total",
	"temporal_long_request_resource_exhausted_total",
	"temporal_activity_execution_failed_total",
	"temporal_activity_task_error_total",
	"temporal_local_activity_execution_failed_total",
	"temporal_local_activity_error_total",
	"temporal_workflow_task_execution_failed_total",
	"temporal_workflow_failed_total",
}

// operationLabel and causeLabel pick the RPC's name and, for resource exhausted, the server's
// cause out of a series' labels.
var (
	operationLabel = regexp.MustCompile(`operation="([^"]*)"`)
	causeLabel     = regexp.MustCompile(`cause="([^"]*)"`)
)

// scrapeCounters sums the SDK failure counters over the metrics endpoints, keyed by family and
// operation; nil when no endpoint answered.
func (b *bench) scrapeCounters(ctx context.Context) map[string]float64 {
	var out map[string]float64
	hc := newHTTPClient(5 * time.Second)
	for _, u := range b.cfg.Hit.SDKMetrics {
		m, err := scrape(ctx, hc, u)
		if err != nil {
			b.log.Warn("SDK metrics not read", "url", u, "err", err)
			continue
		}
		if out == nil {
			out = map[string]float64{}
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

func scrape(ctx context.Context, hc *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return parseCounters(resp.Body)
}

// parseCounters reads the SDK failure counters out of Prometheus' text format.
func parseCounters(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name = strings.Fields(name)[0]
		if !slices.Contains(sdkFailureFamilies, name) {
			continue
		}
		key := name
		var labels []string
		for _, re := range []*regexp.Regexp{operationLabel, causeLabel} {
			if m := re.FindStringSubmatch(rest); m != nil && m[1] != "" {
				labels = append(labels, m[1])
			}
		}
		if len(labels) > 0 {
			key += "{" + strings.Join(labels, ",") + "}"
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		out[key] += v
	}
	return out, sc.Err()
}

// counterRise is now − before for the counters that rose.
func counterRise(before, now map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// logPatterns are what a log line says when an RPC to Temporal, or a task's answer, failed
// (matched without regard to case). The SDK logs a failed RespondActivityTaskCompleted as
// "Task processing failed" at level info; the Temporal server logs a task it could not hand on
// (e.g. a workflow or activity task to matching) as "Fail to process task".
var logPatterns = []string{
	"RespondActivityTaskCompleted", "RespondWorkflowTaskCompleted", "context deadline exceeded",
	"DeadlineExceeded", "resource exhausted", "ResourceExhausted", "Task processing failed",
	"Failed to process workflow task", "Fail to process task",
}

// logFiles are the logs the check reads: the workers', the gateways' and, when given, the
// Temporal server's.
func (b *bench) logFiles() []string {
	if len(b.cfg.Hit.Logs) > 0 {
		return b.cfg.Hit.Logs
	}
	var out []string
	for _, g := range []string{"worker-*.log", "gateway*.log"} {
		m, _ := filepath.Glob(filepath.Join(b.cfg.RunDir, "log", g))
		out = append(out, m...)
	}
	return out
}

// scanLog counts the lines of path written after offset that match a pattern.
func (b *bench) scanLog(l *LostResults, path string, offset int64) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < offset {
		offset = 0 // the log was truncated or replaced
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return
	}
	for _, m := range matchLines(f, logPatterns) {
		l.LogLines[filepath.Base(path)+": "+m.pattern]++
		if m.first {
			l.sample("%s: %s", filepath.Base(path), m.line)
		}
	}
}

// logMatch is one pattern found on one line; first marks its first line.
type logMatch struct {
	pattern, line string
	first         bool
}

// matchLines finds every pattern on every line of r.
func matchLines(r io.Reader, patterns []string) []logMatch {
	var out []logMatch
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		lower := strings.ToLower(sc.Text())
		for _, p := range patterns {
			if strings.Contains(lower, strings.ToLower(p)) {
				line := sc.Text()
				if len(line) > 300 {
					line = line[:300] + "…"
				}
				out = append(out, logMatch{pattern: p, line: line, first: !seen[p]})
				seen[p] = true
			}
		}
	}
	return out
}

// HistoryTotal is the sum of the counts read from the histories.
func (l *LostResults) HistoryTotal() int {
	return l.HistoriesNotRead + l.NotCompleted + l.ActivityTimedOut + l.ActivityFailed + l.ActivityRetried +
		l.WorkflowTaskTimedOut + l.WorkflowTaskFailed + l.LocalActivityFailed
}

// flagged are the workflows whose histories show a failure, at most n, sorted.
func flagged(ids []string, facts map[string]histFacts, n int) []string {
	var out []string
	for _, id := range slices.Sorted(slices.Values(ids)) {
		f, ok := facts[id]
		if ok && (!f.Completed() || len(f.Failures) > 0) && len(out) < n {
			out = append(out, id)
		}
	}
	return out
}

// saveHistories writes the histories of up to five flagged workflows to
// <out>/lost-histories/<name>-<id>.json, for the search for the cause: a standalone store is
// dropped at the end of the run.
func (b *bench) saveHistories(ctx context.Context, l *LostResults, name string, ids []string, facts map[string]histFacts) {
	ids = flagged(ids, facts, 5)
	if len(ids) == 0 {
		return
	}
	dir := filepath.Join(b.cfg.OutDir, "lost-histories")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.log.Warn("histories not saved", "err", err)
		return
	}
	c, err := b.dialTemporal()
	if err != nil {
		b.log.Warn("histories not saved", "err", err)
		return
	}
	defer c.Close()
	for _, id := range ids {
		it := c.GetWorkflowHistory(ctx, id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		var h historypb.History
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				break
			}
			h.Events = append(h.Events, e)
		}
		js, err := protojson.MarshalOptions{Multiline: true}.Marshal(&h)
		if err != nil {
			continue
		}
		p := filepath.Join(dir, name+"-"+id+".json")
		if os.WriteFile(p, js, 0o644) == nil {
			l.HistoriesSaved = append(l.HistoriesSaved, filepath.Join("lost-histories", filepath.Base(p)))
		}
	}
}
