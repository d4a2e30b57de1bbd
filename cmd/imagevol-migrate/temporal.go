package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/searchattr"
)

// retryEvery is the pause between attempts while the Temporal frontend is starting or its
// namespace cache has not caught up yet.
const retryEvery = 250 * time.Millisecond

// setupTemporal makes the Temporal cluster of common ready for imagevol: it registers the
// namespace (temporal.namespace) with the given retention unless it exists (an existing one is
// left as it is), adds the custom search attributes provisions are tagged with that the
// namespace lacks, and waits until the frontend accepts a query on all of them, which it does
// only once its namespace cache has the new attributes. It fails when an attribute exists with
// another type. Running it again changes nothing.
func setupTemporal(ctx context.Context, common config.Common, retention time.Duration, out io.Writer) error {
	tlsCfg, err := common.TLSConfig()
	if err != nil {
		return err
	}
	quiet := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	var c client.Client
	err = retry(ctx, func() error {
		var err error
		c, err = client.DialContext(ctx, client.Options{
			HostPort: common.TemporalAddress, Namespace: common.Namespace, Logger: quiet,
			ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("connect to temporal at %s: %w", common.TemporalAddress, err)
	}
	defer c.Close()
	ns := common.Namespace
	svc := c.WorkflowService()

	state := "exists"
	_, err = svc.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
	var notFound *serviceerror.NamespaceNotFound
	switch {
	case errors.As(err, &notFound):
		_, err = svc.RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
			Namespace:                        ns,
			Description:                      "imagevol provisions",
			WorkflowExecutionRetentionPeriod: durationpb.New(retention),
		})
		var exists *serviceerror.NamespaceAlreadyExists
		switch {
		case err == nil:
			state = "registered"
		case errors.As(err, &exists): // registered meanwhile by another run
		default:
			return fmt.Errorf("register namespace %q: %w", ns, err)
		}
	case err != nil:
		return fmt.Errorf("describe namespace %q: %w", ns, err)
	}
	var desc *workflowservice.DescribeNamespaceResponse
	if err := retry(ctx, func() error {
		var err error
		desc, err = svc.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
		return err
	}); err != nil {
		return fmt.Errorf("namespace %q not visible after registering it: %w", ns, err)
	}
	fmt.Fprintf(out, "temporal %s namespace %s: %s (retention %s)\n", common.TemporalAddress, ns, state,
		desc.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration())

	// The frontend lists a namespace's attributes from its namespace cache, which learns of a
	// new namespace, and of attributes added to it, within seconds.
	want := searchattr.Types()
	var before, after map[string]enumspb.IndexedValueType
	if err := retry(ctx, func() error {
		var err error
		before, err = customSearchAttributes(ctx, c, ns)
		return err
	}); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := searchattr.Ensure(ctx, c, ns, logger); err != nil {
		return err
	}
	if err := retry(ctx, func() error {
		var err error
		if after, err = customSearchAttributes(ctx, c, ns); err != nil {
			return err
		}
		for name := range want {
			if _, ok := after[name]; !ok {
				return fmt.Errorf("search attribute %s not listed yet", name)
			}
		}
		return nil
	}); err != nil && after == nil {
		return err
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	fresh := 0
	var problems, terms []string
	for _, name := range names {
		got, ok := after[name]
		mark := ""
		if _, had := before[name]; !had && ok {
			mark, fresh = "  (new)", fresh+1
		}
		switch {
		case !ok:
			problems = append(problems, name+" missing")
		case got != want[name]:
			problems = append(problems, fmt.Sprintf("%s is %s, want %s", name, got, want[name]))
		}
		typ := got.String()
		if !ok {
			typ = "missing"
		}
		fmt.Fprintf(out, "  search attribute %-12s %s%s\n", name, typ, mark)
		terms = append(terms, fmt.Sprintf("%s = %q", name, "imagevol-setup-probe"))
	}
	if len(problems) > 0 {
		return fmt.Errorf("namespace %q: search attributes: %s", ns, strings.Join(problems, "; "))
	}

	// Starting a workflow tagged with an attribute the frontend's namespace cache does not know
	// yet fails; a query on them all passes once it does.
	query := strings.Join(terms, " AND ")
	if err := retry(ctx, func() error {
		_, err := svc.ListWorkflowExecutions(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: ns, PageSize: 1, Query: query,
		})
		return err
	}); err != nil {
		return fmt.Errorf("namespace %q: the frontend does not accept queries on the search attributes: %w", ns, err)
	}
	fmt.Fprintf(out, "temporal ready: %d search attributes; %d new, %d already registered\n", len(names), fresh, len(names)-fresh)
	return nil
}

// customSearchAttributes lists the namespace's custom search attributes by name.
func customSearchAttributes(ctx context.Context, c client.Client, ns string) (map[string]enumspb.IndexedValueType, error) {
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
	if err != nil {
		return nil, fmt.Errorf("list search attributes of %q: %w", ns, err)
	}
	return resp.GetCustomAttributes(), nil
}

// retry calls f until it succeeds or ctx ends, and then returns f's last error.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retryEvery):
		}
	}
}
