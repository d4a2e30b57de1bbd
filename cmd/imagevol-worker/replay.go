package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/imagevol/imagevol/cmd/internal/cli"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/worker"
)

// nonDeterminism marks the SDK's non-determinism errors.
const nonDeterminism = "TMPRL1100"

// replay replays one workflow history, fetched from Temporal or read from a file, against the
// workflow code compiled into this binary: the code this worker runs. It lives in the worker,
// not in imagevolctl, because the workflow code links the worker's dependencies (the database,
// Ceph, metrics), which the API client has no use for.
func replay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	address := fs.String("address", config.Env("IMAGEVOL_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend host:port")
	namespace := fs.String("namespace", config.Env("IMAGEVOL_TEMPORAL_NAMESPACE", "default"), "Temporal namespace")
	file := fs.String("file", "", "replay this JSON `history` file (as temporal workflow show --output json writes it) instead of fetching one")
	run := fs.String("run", "", "run ID (default: the latest run)")
	save := fs.String("save", "", "also write the fetched history to this file as JSON")
	rest, err := cli.ParseInterspersed(fs, args)
	if err != nil {
		return err
	}
	const usage = "usage: imagevol-worker replay [--address HOST:PORT] [--namespace NS] [--run RUN] [--save FILE] VOLUME | replay --file HISTORY.json"
	var (
		hist *historypb.History
		name string
	)
	switch {
	case *file != "" && len(rest) == 0:
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		hist, err = client.HistoryFromJSON(f, client.HistoryJSONOptions{})
		f.Close()
		if err != nil {
			return fmt.Errorf("read history %s: %w", *file, err)
		}
		name = *file
	case *file == "" && len(rest) == 1:
		if hist, err = fetchHistory(ctx, *address, *namespace, rest[0], *run); err != nil {
			return err
		}
		name = "workflow " + rest[0]
		if *save != "" {
			b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
			if err != nil {
				return err
			}
			if err := os.WriteFile(*save, b, 0o644); err != nil {
				return err
			}
		}
	default:
		return errors.New(usage)
	}
	if len(hist.GetEvents()) == 0 {
		return fmt.Errorf("%s: empty history", name)
	}
	if start := hist.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes(); start != nil {
		name += fmt.Sprintf(" (%s, run %s)", start.GetWorkflowType().GetName(), start.GetOriginalExecutionRunId())
	}

	replayer := sdkworker.NewWorkflowReplayer()
	worker.RegisterWorkflows(replayer)
	// The verdict below carries the error; the SDK's own panic log would only repeat it.
	if err := replayer.ReplayWorkflowHistory(quietLogger(), hist); err != nil {
		if strings.Contains(err.Error(), nonDeterminism) {
			return fmt.Errorf("%s: NOT deterministic: the current workflow code does not replay its %d events: %w", name, len(hist.GetEvents()), err)
		}
		return fmt.Errorf("%s: replay failed: %w", name, err)
	}
	fmt.Printf("%s: deterministic: %d events replay against the current workflow code\n", name, len(hist.GetEvents()))
	return nil
}

// fetchHistory reads the whole history of a workflow run from Temporal, over TLS (mTLS with a
// client certificate) when the IMAGEVOL_TEMPORAL_TLS_* variables say so, as the services do.
func fetchHistory(ctx context.Context, address, namespace, workflowID, runID string) (*historypb.History, error) {
	tlsCfg, err := config.Common{TLS: config.EnvTemporalTLS()}.TLSConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(client.Options{
		HostPort: address, Namespace: namespace, ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
		// The SDK's default logger writes to stdout, where the verdict goes.
		Logger: quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s: %w", address, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	hist := &historypb.History{}
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of workflow %s: %w", workflowID, err)
		}
		hist.Events = append(hist.Events, ev)
	}
	return hist, nil
}

func quietLogger() sdklog.Logger {
	return sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
}
