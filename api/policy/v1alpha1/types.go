package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Condition types and reasons written to the status of every kind here.
const (
	// ConditionAccepted says whether the controller uses the object. False
	// names the culprit in its reason and message.
	ConditionAccepted = "Accepted"
	// ReasonAccepted: the object is valid and in use.
	ReasonAccepted = "Accepted"
	// ReasonTargetNotFound: targetRef names no Server in the namespace.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonInvalid: a field the schema cannot check is wrong (the message
	// names it).
	ReasonInvalid = "Invalid"
	// ReasonConflict: another, older object already does this job (a
	// second RateLimit of one Server); the message names it.
	ReasonConflict = "Conflict"
)

// Protocol says how a Server's proxies handle inbound connections.
// +kubebuilder:validation:Enum=unknown;HTTP/1;HTTP/2;gRPC;opaque;TLS
type Protocol string

// Protocols of a Server.
const (
	ProtocolUnknown Protocol = "unknown"
	ProtocolHTTP1   Protocol = "HTTP/1"
	ProtocolHTTP2   Protocol = "HTTP/2"
	ProtocolGRPC    Protocol = "gRPC"
	ProtocolOpaque  Protocol = "opaque"
	ProtocolTLS     Protocol = "TLS"
)

// A Server is a port on a set of pods that Trellis proxies serve inbound traffic for. AuthorizationPolicies and RateLimits attach to it.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=srv,categories={trellis,policy}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Port",type=string,JSONPath=`.spec.port`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.protocol`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Server struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ServerSpec `json:"spec"`
	Status Status     `json:"status,omitempty"`
}

// ServerSpec selects the pods and the port of a Server.
type ServerSpec struct {
	// Pods in the Server's namespace this Server applies to. An empty selector selects every pod of the namespace.
	PodSelector PodSelector `json:"podSelector"`
	// The port, by number (1-65535) or by the container port's name.
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : true",message="port must be a number between 1 and 65535 or a container port name"
	// +kubebuilder:validation:XValidation:rule="type(self) == string ? self.matches('^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$') && self.matches('[a-z]') : true",message="port name must be an IANA service name: at most 15 lowercase letters, digits and '-', with a letter, not starting or ending with '-'"
	Port intstr.IntOrString `json:"port"`
	// How inbound connections are handled. unknown detects HTTP/1, HTTP/2 and gRPC from the first bytes; opaque skips detection (server-speaks-first protocols).
	// +kubebuilder:default=unknown
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
}

// PodSelector is a label selector with the sizes bounded (metav1.LabelSelector has no limits the API server could enforce).
type PodSelector struct {
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	MatchExpressions []PodSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelValue is a label value.
// +kubebuilder:validation:MaxLength=63
type LabelValue string

// PodSelectorRequirement is one matchExpressions entry.
// +kubebuilder:validation:XValidation:rule="self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : !has(self.values) || size(self.values) == 0",message="matchExpressions: operators In and NotIn need values; Exists and DoesNotExist take none"
type PodSelectorRequirement struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	Key string `json:"key"`
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator metav1.LabelSelectorOperator `json:"operator"`
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Values []LabelValue `json:"values,omitempty"`
}

// ServerList is a list of Servers.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type ServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Server `json:"items"`
}

// Status is the status of every kind here: the controller's conditions.
type Status struct {
	// Conditions: Accepted says whether the controller uses the object, and if not, why.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServerRef names a Server in the referring object's namespace.
type ServerRef struct {
	// +kubebuilder:validation:Enum=policy.trellis.io
	// +kubebuilder:default=policy.trellis.io
	// +optional
	Group string `json:"group,omitempty"`
	// +kubebuilder:validation:Enum=Server
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// An AuthorizationPolicy allows clients to reach a Server. Clients match if their mesh identity, their namespace or their network matches, or, with unauthenticated, without mesh TLS at all.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=authz,categories={trellis,policy}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Unauthenticated",type=boolean,JSONPath=`.spec.unauthenticated`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationPolicySpec `json:"spec"`
	Status Status                  `json:"status,omitempty"`
}

// AuthorizationPolicySpec says who may reach the target Server.
// +kubebuilder:validation:XValidation:rule="has(self.identities) || has(self.namespaces) || has(self.networks) || (has(self.unauthenticated) && self.unauthenticated)",message="the policy allows nobody: set identities, namespaces, networks or unauthenticated: true"
type AuthorizationPolicySpec struct {
	// The Server in this namespace the policy applies to.
	TargetRef ServerRef `json:"targetRef"`
	// Mesh identities allowed, as SPIFFE IDs (spiffe://cluster.local/ns/NS/sa/SA), or "*" for any authenticated client.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.all(i, i == '*' || i.matches('^spiffe://[a-z0-9._-]+(/[^/[:space:]]+)+$'))",message="each identity must be \"*\" or a SPIFFE ID such as spiffe://cluster.local/ns/NAMESPACE/sa/SERVICEACCOUNT (a URI starting spiffe://, not a service account or namespace name)"
	// +listType=set
	// +optional
	Identities []string `json:"identities,omitempty"`
	// Namespaces whose authenticated workloads are allowed, or "*" for all.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// Client networks allowed (with or without mesh TLS when unauthenticated is true; with mesh TLS otherwise).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Networks []Network `json:"networks,omitempty"`
	// Also allow clients without mesh TLS (from networks, when set).
	// +kubebuilder:default=false
	// +optional
	Unauthenticated bool `json:"unauthenticated,omitempty"`
}

// Network is a CIDR with exceptions.
type Network struct {
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or fd00::/8"
	CIDR string `json:"cidr"`
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	Except []ExceptCIDR `json:"except,omitempty"`
}

// ExceptCIDR is a CIDR left out of a Network.
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="except entries must be IPv4 or IPv6 CIDRs"
type ExceptCIDR string

// AuthorizationPolicyList is a list of AuthorizationPolicies.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

// A RateLimit caps the requests per second and the requests in flight a Server's proxies accept, per pod. Requests over the limit are refused with 429 (HTTP) or RESOURCE_EXHAUSTED (gRPC).
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories={trellis,policy}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="RPS",type=integer,JSONPath=`.spec.requestsPerSecond`
// +kubebuilder:printcolumn:name="Concurrency",type=integer,JSONPath=`.spec.concurrency`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RateLimitSpec `json:"spec"`
	Status Status        `json:"status,omitempty"`
}

// RateLimitSpec is the limit of the target Server's proxies.
// +kubebuilder:validation:XValidation:rule="has(self.requestsPerSecond) || has(self.concurrency)",message="set requestsPerSecond, concurrency or both"
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || has(self.requestsPerSecond)",message="burst needs requestsPerSecond"
type RateLimitSpec struct {
	// The Server in this namespace the limit applies to.
	TargetRef ServerRef `json:"targetRef"`
	// Sustained requests per second each proxy accepts.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`
	// Requests above the rate allowed in a burst (token bucket size). Defaults to requestsPerSecond.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Burst *int32 `json:"burst,omitempty"`
	// Requests in flight each proxy allows at once.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	Concurrency *int32 `json:"concurrency,omitempty"`
}

// RateLimitList is a list of RateLimits.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type RateLimitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RateLimit `json:"items"`
}
