package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Condition types and reasons written to the status of every kind here.
const (
	// ConditionAccepted says whether the controller translates the object
	// into the policy it sends to proxies. False names the culprit in its
	// reason and message.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs says whether every object the object refers to
	// (an AuthorizationPolicy's targetRef) exists.
	ConditionResolvedRefs = "ResolvedRefs"
	// ReasonAccepted: the object is valid and sent to the proxies it
	// applies to.
	ReasonAccepted = "Accepted"
	// ReasonResolvedRefs: every reference resolves.
	ReasonResolvedRefs = "ResolvedRefs"
	// ReasonTargetNotFound: targetRef names no object in the namespace (the
	// message names it).
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonInvalid: a field the schema cannot check is wrong (the message
	// names it).
	ReasonInvalid = "Invalid"
	// ReasonConflict: another, older object already does this job (a
	// second RateLimit of one Server, a second Server selecting the same
	// pod and port); the message names it.
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

// AccessPolicy is what applies to a call to a Server's port that no
// AuthorizationPolicy allows.
// +kubebuilder:validation:Enum=deny;audit;all-authenticated;cluster-authenticated;all-unauthenticated
type AccessPolicy string

// Access policies of a Server, and values of the default inbound policy.
const (
	AccessDeny                 AccessPolicy = "deny"
	AccessAudit                AccessPolicy = "audit"
	AccessAllAuthenticated     AccessPolicy = "all-authenticated"
	AccessClusterAuthenticated AccessPolicy = "cluster-authenticated"
	AccessAllUnauthenticated   AccessPolicy = "all-unauthenticated"
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
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.spec.accessPolicy`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
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
	// What applies to a call no AuthorizationPolicy allows: deny (refused), audit (let through, counted and logged as a would-be denial), all-authenticated (any caller with a verified mesh identity), cluster-authenticated (mesh identities of the cluster's trust domain), all-unauthenticated (anyone).
	// +kubebuilder:default=deny
	// +optional
	AccessPolicy AccessPolicy `json:"accessPolicy,omitempty"`
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

// RateLimitTargetRef names what a RateLimit limits, in the RateLimit's namespace: a Server (group policy.trellis.io, or none: its pods' inbound proxies limit the requests they accept) or a Service (group "" or none: each client proxy limits its own requests to the Service).
// +kubebuilder:validation:XValidation:rule="self.kind == 'Server' ? (!has(self.group) || self.group == 'policy.trellis.io') : (!has(self.group) || self.group.size() == 0)",message="targetRef: a Server has group policy.trellis.io (or none), a Service group \"\" (or none)"
type RateLimitTargetRef struct {
	// +kubebuilder:validation:Enum="";policy.trellis.io
	// +optional
	Group string `json:"group,omitempty"`
	// +kubebuilder:validation:Enum=Server;Service
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// An AuthorizationPolicy allows clients to reach a Server, every Server of a namespace, or one route (HTTPRoute or GRPCRoute) of a Server. A client is allowed when it comes from one of networks (when set) and it is unauthenticated-allowed or proves one of the listed mesh identities.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=authz,categories={trellis,policy}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Target-Kind",type=string,JSONPath=`.spec.targetRef.kind`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Unauthenticated",type=boolean,JSONPath=`.spec.unauthenticated`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationPolicySpec `json:"spec"`
	Status Status                  `json:"status,omitempty"`
}

// Target kinds of an AuthorizationPolicy, and the Gateway API group.
const (
	KindServer    = "Server"
	KindNamespace = "Namespace"
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
	GatewayGroup  = "gateway.networking.k8s.io"
	// KindService: a RateLimit on a Service limits each client proxy's
	// own requests to it (outbound).
	KindService = "Service"
)

// PolicyTargetRef names what an AuthorizationPolicy applies to, in the policy's namespace: a Server (group policy.trellis.io), the Namespace itself (group "", every Server in it), or an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io) whose parentRef is a Server.
// +kubebuilder:validation:XValidation:rule="self.kind == 'Server' ? (!has(self.group) || self.group == 'policy.trellis.io') : self.kind == 'Namespace' ? (!has(self.group) || self.group.size() == 0) : (has(self.group) && self.group == 'gateway.networking.k8s.io')",message="targetRef: a Server has group policy.trellis.io (or none), a Namespace group \"\" (or none), an HTTPRoute or GRPCRoute group gateway.networking.k8s.io"
type PolicyTargetRef struct {
	// +kubebuilder:validation:Enum="";policy.trellis.io;gateway.networking.k8s.io
	// +optional
	Group string `json:"group,omitempty"`
	// +kubebuilder:validation:Enum=Server;Namespace;HTTPRoute;GRPCRoute
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// IdentityPattern is what an exact SPIFFE ID in identities must look like: exactly what the proxy accepts (internal/identity.Parse): spiffe://<trust domain>/ns/<namespace>/sa/<service account>, lower-case DNS labels of at most 63 characters, a trust domain of at most 253. The CRD's CEL rule uses it too (TestIdentityPatternAgreesWithParse).
const IdentityPattern = `^spiffe://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/ns/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/sa/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`

// Identity is an exact SPIFFE ID, or "*" for any authenticated client.
// +kubebuilder:validation:MaxLength=400
// +kubebuilder:validation:XValidation:rule="self == '*' || (self.matches('^spiffe://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([.][a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/ns/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/sa/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$') && self.substring(9).indexOf('/') <= 253)",message="identities: each entry must be \"*\" or a SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<service account> in lower-case letters, digits and '-' (for example spiffe://cluster.local/ns/shop/sa/web)"
type Identity string

// ServiceAccountRef names a ServiceAccount whose workloads are allowed.
type ServiceAccountRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// The ServiceAccount's namespace; the policy's own when empty.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// AuthorizationPolicySpec says who may reach the target.
// +kubebuilder:validation:XValidation:rule="has(self.identities) || has(self.serviceAccounts) || has(self.namespaces) || has(self.networks) || (has(self.unauthenticated) && self.unauthenticated)",message="the policy allows nobody: set identities, serviceAccounts, namespaces, networks or unauthenticated: true"
type AuthorizationPolicySpec struct {
	// What the policy applies to, in this namespace: a Server, the Namespace (every Server in it), or an HTTPRoute/GRPCRoute whose parent is a Server.
	TargetRef PolicyTargetRef `json:"targetRef"`
	// Mesh identities allowed, as exact SPIFFE IDs (spiffe://cluster.local/ns/NS/sa/SA), or "*" for any authenticated client.
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	// +optional
	Identities []Identity `json:"identities,omitempty"`
	// ServiceAccounts whose workloads are allowed (their SPIFFE IDs in the cluster's trust domain).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`
	// Namespaces whose authenticated workloads (any ServiceAccount) are allowed, or "*" for every authenticated client.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// Client networks the caller must come from (with mesh TLS as identities, serviceAccounts and namespaces require; with or without when unauthenticated is true, or when they are all empty).
	// +kubebuilder:validation:MaxItems=16
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
	// +kubebuilder:validation:MaxItems=16
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

// A RateLimit on a Server caps the requests per second and the requests in flight the Server's proxies accept, per pod (inbound). A RateLimit on a Service caps the requests per second each client proxy sends to the Service, every client proxy with its own bucket (outbound). A request over a rate is refused with 429 and Retry-After (gRPC: RESOURCE_EXHAUSTED); one over the concurrency limit with 503 (gRPC: UNAVAILABLE).
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories={trellis,policy}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.targetRef.kind`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="RPS",type=integer,JSONPath=`.spec.requestsPerSecond`
// +kubebuilder:printcolumn:name="Per-Client",type=integer,JSONPath=`.spec.perClient.requestsPerSecond`
// +kubebuilder:printcolumn:name="Concurrency",type=integer,JSONPath=`.spec.concurrency`
// +kubebuilder:printcolumn:name="Adaptive",type=boolean,JSONPath=`.spec.adaptiveConcurrency.enabled`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RateLimitSpec `json:"spec"`
	Status Status        `json:"status,omitempty"`
}

// RateLimitSpec is the limit of the target Server's proxies, or of every client proxy of the target Service.
// +kubebuilder:validation:XValidation:rule="self.targetRef.kind != 'Service' || (has(self.requestsPerSecond) && !has(self.perClient) && !has(self.overrides) && !has(self.concurrency) && !has(self.adaptiveConcurrency))",message="a RateLimit on a Service limits each client proxy's own requests to it: set requestsPerSecond (and burst); perClient, overrides, concurrency and adaptiveConcurrency apply to a Server only"
// +kubebuilder:validation:XValidation:rule="has(self.requestsPerSecond) || has(self.concurrency) || has(self.perClient) || has(self.overrides) || has(self.adaptiveConcurrency)",message="set requestsPerSecond, perClient, overrides, concurrency or adaptiveConcurrency"
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || has(self.requestsPerSecond)",message="burst needs requestsPerSecond"
type RateLimitSpec struct {
	// What the limit applies to, in this namespace: a Server (its pods' proxies limit what they accept) or a Service (each client proxy limits what it sends to the Service: a bucket per client proxy, shared by the Service's ports).
	TargetRef RateLimitTargetRef `json:"targetRef"`
	// Sustained requests per second each proxy accepts, from all clients together (a Server); or each client proxy sends to the Service (a Service).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	RequestsPerSecond *int32 `json:"requestsPerSecond,omitempty"`
	// Requests above the rate allowed in a burst (token bucket size). Defaults to requestsPerSecond.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Burst *int32 `json:"burst,omitempty"`
	// Requests in flight each proxy allows at once: a hard cap (also of the adaptive limit).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	Concurrency *int32 `json:"concurrency,omitempty"`
	// Each client's own rate, so that one noisy caller cannot use up requestsPerSecond: every mesh identity has its own bucket; the callers without mesh TLS share one. A request takes a token from its client's bucket and from the Server's.
	// +optional
	PerClient *ClientRate `json:"perClient,omitempty"`
	// Rates of particular clients, instead of perClient (each listed client has its own bucket of this size).
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Overrides []RateLimitOverride `json:"overrides,omitempty"`
	// An adaptive concurrency limit: the limit follows the app's observed latency (a gradient, as Netflix's concurrency-limits Gradient2), so an overloaded app is protected without hand tuning.
	// +optional
	AdaptiveConcurrency *AdaptiveConcurrency `json:"adaptiveConcurrency,omitempty"`
}

// ClientRate is a token bucket of each client.
type ClientRate struct {
	// Sustained requests per second of each client.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	RequestsPerSecond int32 `json:"requestsPerSecond"`
	// Bucket size. Defaults to requestsPerSecond.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Burst *int32 `json:"burst,omitempty"`
}

// RateLimitOverride is the rate of particular clients.
type RateLimitOverride struct {
	// The clients this rate is for.
	Clients    RateLimitClients `json:"clients"`
	ClientRate `json:",inline"`
}

// RateLimitClients names clients by mesh identity.
// +kubebuilder:validation:XValidation:rule="has(self.identities) || has(self.serviceAccounts)",message="clients: set identities or serviceAccounts"
type RateLimitClients struct {
	// Exact SPIFFE IDs (spiffe://cluster.local/ns/NS/sa/SA); "*" is not allowed here.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(i, i != '*')",message="overrides: identities must be exact SPIFFE IDs, not \"*\" (use perClient for every client)"
	// +listType=set
	// +optional
	Identities []Identity `json:"identities,omitempty"`
	// ServiceAccounts whose workloads these are (their SPIFFE IDs in the cluster's trust domain).
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`
}

// AdaptiveConcurrency turns the adaptive concurrency limit on.
// +kubebuilder:validation:XValidation:rule="!has(self.minLimit) || !has(self.maxLimit) || self.minLimit <= self.maxLimit",message="minLimit must not exceed maxLimit"
type AdaptiveConcurrency struct {
	// On when true.
	Enabled bool `json:"enabled"`
	// The lowest limit (default 20).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MinLimit *int32 `json:"minLimit,omitempty"`
	// The highest limit (default 1000, or concurrency when lower).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxLimit *int32 `json:"maxLimit,omitempty"`
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
