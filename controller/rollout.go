package controller

import (
	"errors"
	"fmt"

	"nexus.dev/nexus/api/types"
)

// ErrJobFailed is what RolloutStatus returns for a job that failed.
var ErrJobFailed = errors.New("job failed")

// RolloutStatus says whether a workload's latest change has been carried
// out, in the words `nexus rollout status` prints: a service or daemon is
// done when every instance runs the current template and is ready and no
// old one is left; a job when it is complete (a failed job is an error
// wrapping ErrJobFailed). It reads only the workload's status, which the
// controller keeps.
func RolloutStatus(w *types.Workload) (done bool, msg string, err error) {
	st := &w.Status
	name := fmt.Sprintf("workload %q", w.Name)
	if st.ObservedGeneration < w.Generation {
		return false, fmt.Sprintf("Waiting for the controller to see the latest change of %s...", name), nil
	}
	if w.Spec.Kind == types.KindJob {
		if c := types.FindCondition(st.Conditions, ConditionFailed); c != nil && c.Status == types.ConditionTrue {
			return false, "", fmt.Errorf("%s: %w: %s", name, ErrJobFailed, c.Message)
		}
		want := deref(w.Spec.Completions, types.DefaultCompletions)
		if isTrue(st.Conditions, ConditionComplete) {
			return true, fmt.Sprintf("%s completed: %d of %d succeeded", name, st.Succeeded, want), nil
		}
		return false, fmt.Sprintf("Waiting for %s to complete: %d of %d succeeded, %d running, %d failed...", name, st.Succeeded, want, st.Replicas, st.Failed), nil
	}
	want := st.DesiredReplicas
	if w.Spec.Kind == types.KindService {
		want = deref(w.Spec.Replicas, types.DefaultReplicas)
	}
	switch {
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("Waiting for the rollout of %s to finish: %d of %d instances updated...", name, st.UpdatedReplicas, want), nil
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("Waiting for the rollout of %s to finish: %d old instances are being replaced...", name, st.Replicas-st.UpdatedReplicas), nil
	case st.ReadyReplicas < want:
		return false, fmt.Sprintf("Waiting for the rollout of %s to finish: %d of %d updated instances are ready...", name, st.ReadyReplicas, want), nil
	}
	return true, fmt.Sprintf("%s successfully rolled out (revision %s)", name, st.Revision), nil
}
