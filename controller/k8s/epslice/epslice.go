// Package epslice is what the controllers that write EndpointSlices of
// their own share (controller/k8s/mirror, controller/k8s/external): the
// key that groups endpoints with the same ports into one slice, a stable
// slice name from it, what a controller compares before writing, and
// applying a desired set of slices with as few writes as it takes.
package epslice

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"strconv"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryclient "k8s.io/client-go/kubernetes/typed/discovery/v1"
)

// PortsKey identifies a port list: a slice has one list for all its
// endpoints, so endpoints whose ports differ go into different slices.
func PortsKey(ps []discoveryv1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ps {
		if p.Name != nil {
			b.WriteString(*p.Name)
		}
		b.WriteByte('/')
		if p.Port != nil {
			b.WriteString(strconv.Itoa(int(*p.Port)))
		}
		b.WriteByte(',')
	}
	return b.String()
}

// Name is the slice name of a grouping key: prefix-<hash of key>, the
// same on every sync, so a group's slice is updated rather than replaced.
func Name(prefix, key string) string {
	h := fnv.New32a()
	h.Write([]byte(key))
	return prefix + "-" + strconv.FormatUint(uint64(h.Sum32()), 36)
}

// Differs reports whether what a controller sets on its slices differs
// between have and want (fields the API server fills are left out).
func Differs(have, want *discoveryv1.EndpointSlice) bool {
	return !maps.Equal(have.Labels, want.Labels) || !maps.Equal(have.Annotations, want.Annotations) ||
		have.AddressType != want.AddressType ||
		!equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences) ||
		!equality.Semantic.DeepEqual(have.Ports, want.Ports) || !equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints)
}

// Writes counts what an Apply changed.
type Writes struct{ Created, Updated, Deleted int }

// Apply makes a controller's slices of one Service (have, from its cache:
// only slices it manages) exactly want, matched by name, writing only
// those that differ. A create that finds the slice already there is not an
// error: an earlier sync made it and the cache has not seen it yet; its
// informer event brings another sync.
func Apply(ctx context.Context, api discoveryclient.EndpointSliceInterface, have, want []*discoveryv1.EndpointSlice, fieldManager string) (Writes, error) {
	var w Writes
	byName := map[string]*discoveryv1.EndpointSlice{}
	for _, sl := range have {
		byName[sl.Name] = sl
	}
	for _, sl := range want {
		h, ok := byName[sl.Name]
		delete(byName, sl.Name)
		switch {
		case !ok:
			// NotFound: the namespace is gone or going.
			_, err := api.Create(ctx, sl, metav1.CreateOptions{FieldManager: fieldManager})
			if err == nil {
				w.Created++
			} else if !apierrors.IsNotFound(err) && !apierrors.IsAlreadyExists(err) {
				return w, fmt.Errorf("create EndpointSlice %s/%s: %w", sl.Namespace, sl.Name, err)
			}
		case Differs(h, sl):
			u := sl.DeepCopy()
			u.ResourceVersion = h.ResourceVersion
			if _, err := api.Update(ctx, u, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
				return w, fmt.Errorf("update EndpointSlice %s/%s: %w", sl.Namespace, sl.Name, err)
			}
			w.Updated++
		}
	}
	for name, sl := range byName {
		var opts metav1.DeleteOptions
		if sl.UID != "" {
			// Never a slice of that name someone made since the cache saw ours.
			opts.Preconditions = &metav1.Preconditions{UID: &sl.UID}
		}
		err := api.Delete(ctx, name, opts)
		if err == nil {
			w.Deleted++
		} else if !apierrors.IsNotFound(err) {
			return w, fmt.Errorf("delete EndpointSlice %s/%s: %w", sl.Namespace, name, err)
		}
	}
	return w, nil
}
