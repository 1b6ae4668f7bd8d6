package tapapi

import (
	"encoding/json"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The aggregated API's group and version (api/v1/tap.proto).
const (
	Group   = "tap.trellis.io"
	Version = "v1alpha1"
	// Subresource is what the kube-apiserver authorizes a tap of an
	// object as (RESOURCE/tap); a whole namespace's tap is the resource
	// "tap" itself.
	Subresource = "tap"
	// VerbWatch is needed for any tap, VerbCapture too for bodies.
	VerbWatch   = "watch"
	VerbCapture = "capture"
)

var groupVersion = metav1.GroupVersionForDiscovery{GroupVersion: Group + "/" + Version, Version: Version}

func apiGroup() metav1.APIGroup {
	return metav1.APIGroup{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:     Group, Versions: []metav1.GroupVersionForDiscovery{groupVersion}, PreferredVersion: groupVersion,
	}
}

// apiResources lists the tap subresources. The kube-apiserver's
// availability check and kubectl's discovery read it; tap itself is not a
// stored object, so there is nothing to list.
func apiResources() metav1.APIResourceList {
	l := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: Group + "/" + Version}
	l.APIResources = append(l.APIResources, metav1.APIResource{Name: "tap", Namespaced: true, Kind: "Tap", Verbs: metav1.Verbs{VerbWatch}})
	for _, r := range tapResources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r + "/" + Subresource, Namespaced: true, Kind: "Tap", Verbs: metav1.Verbs{VerbWatch}})
	}
	return l
}

// serveDiscovery answers the three discovery documents.
func serveDiscovery(w http.ResponseWriter, r *http.Request) bool {
	var doc any
	switch r.URL.Path {
	case "/apis", "/apis/":
		doc = metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{apiGroup()}}
	case "/apis/" + Group, "/apis/" + Group + "/":
		doc = apiGroup()
	case "/apis/" + Group + "/" + Version, "/apis/" + Group + "/" + Version + "/":
		doc = apiResources()
	default:
		return false
	}
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, r.Method+" "+r.URL.Path+": discovery documents are read with GET")
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
	return true
}

// writeStatus answers an error as a metav1.Status, which kubectl and
// client-go show by its message.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	})
}
