package check

import (
	"context"
	"fmt"
)

// ControlPlaneInfo is what the cluster says of the installed control
// plane, for `trellis version`.
type ControlPlaneInfo struct {
	Version   string `json:"version"` // the controller image's tag
	Image     string `json:"image"`
	Namespace string `json:"namespace"`
	Replicas  int32  `json:"replicas"`
	Ready     int32  `json:"readyReplicas"`
}

// ControlPlane reads the controller Deployment: its image's tag is the
// control plane's version (the proxies it injects carry the same).
func ControlPlane(ctx context.Context, e *Env) (ControlPlaneInfo, error) {
	d, err := getController(ctx, e)
	if err != nil {
		return ControlPlaneInfo{}, fmt.Errorf("read deployment %s/%s: %w", e.ns(), ControllerName, err)
	}
	info := ControlPlaneInfo{Image: controllerImage(d), Namespace: e.ns(), Ready: d.Status.ReadyReplicas}
	if d.Spec.Replicas != nil {
		info.Replicas = *d.Spec.Replicas
	}
	info.Version = ImageTag(info.Image)
	if info.Version == "" {
		info.Version = "unknown (image " + info.Image + " has no tag)"
	}
	return info, nil
}
