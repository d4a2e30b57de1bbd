package worker

import (
	"context"

	"go.temporal.io/sdk/interceptor"

	"github.com/imagevol/imagevol/contract"
)

// typedErrors gives every activity's retryable errors of a known cause their error type
// (contract.TypedError), in one place instead of at each return.
type typedErrors struct {
	interceptor.WorkerInterceptorBase
}

func (*typedErrors) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &typedInbound{}
	i.Next = next
	return i
}

type typedInbound struct {
	interceptor.ActivityInboundInterceptorBase
}

func (i *typedInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	res, err := i.Next.ExecuteActivity(ctx, in)
	return res, contract.TypedError(err)
}
