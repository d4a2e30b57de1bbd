package metrics

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
)

// StepInterceptor times every activity attempt a worker of host runs, local activities
// included, into imagevol_step_duration_seconds. Nil for a nil registry.
func (r *Registry) StepInterceptor(host string) interceptor.WorkerInterceptor {
	if r == nil {
		return nil
	}
	return &stepInterceptor{r: r, host: host}
}

type stepInterceptor struct {
	interceptor.WorkerInterceptorBase
	r    *Registry
	host string
}

func (s *stepInterceptor) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &stepInbound{s: s}
	i.Next = next
	return i
}

type stepInbound struct {
	interceptor.ActivityInboundInterceptorBase
	s *stepInterceptor
}

func (i *stepInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	start := time.Now()
	res, err := i.Next.ExecuteActivity(ctx, in)
	i.s.r.ObserveStep(i.s.host, activity.GetInfo(ctx).ActivityType.Name, time.Since(start), err)
	return res, err
}
