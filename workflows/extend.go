package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// ExtendVolume grows a volume's RBD image to its new size on the volume's host, then records
// the new size and makes the volume available again, as Cinder's os-extend does. The gateway
// has set the volume "extending". A failed extension leaves the volume "error_extending" with
// its old size and the cause, as Cinder does. Every step is idempotent: growing an image to a
// size it already has does nothing.
func ExtendVolume(ctx workflow.Context, in contract.ExtendVolumeInput) error {
	var a *activities.Activities
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	fail := func(err error) error {
		u := contract.VolumeUpdate{VolumeID: in.VolumeID, Status: models.StatusErrorExtending, Error: errorMessage(err)}
		if serr := workflow.ExecuteLocalActivity(lctx, a.SetVolumeState, u).Get(ctx, nil); serr != nil {
			workflow.GetLogger(ctx).Error("volume not marked error_extending", "volume", in.VolumeID, "error", serr)
		}
		return err
	}
	size, err := models.GiBToBytes(int64(in.NewSizeGB))
	if err != nil || in.NewSizeGB <= in.OldSizeGB {
		return fail(temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("cannot extend volume %s from %d GiB to %d GiB", in.VolumeID, in.OldSizeGB, in.NewSizeGB), contract.ErrTypeInvalidSize, err))
	}
	hctx := workflow.WithActivityOptions(ctx, withQueue(quickStep, contract.HostQueue(in.Host)))
	grow := contract.ResizeInput{Pool: in.Pool, Name: contract.RBDName(in.VolumeID), SizeBytes: size}
	if err := workflow.ExecuteActivity(hctx, a.ExtendVolume, grow).Get(ctx, nil); err != nil {
		return fail(err)
	}
	done := contract.VolumeUpdate{VolumeID: in.VolumeID, Status: models.StatusAvailable, SizeGB: in.NewSizeGB}
	return workflow.ExecuteLocalActivity(lctx, a.SetVolumeState, done).Get(ctx, nil)
}
