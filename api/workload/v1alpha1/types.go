package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of an ExternalWorkload's status.
const (
	// ConditionCertified says whether the workload's proxy holds a
	// certificate: True once a bootstrap token was redeemed, with the
	// expiry of the last certificate in status.certificateExpiry.
	ConditionCertified = "Certified"
	// ReasonCertified: a certificate was issued to the key in
	// status.keySHA256.
	ReasonCertified = "Certified"
	// ReasonAwaitingBootstrap: no bootstrap token has been redeemed yet.
	ReasonAwaitingBootstrap = "AwaitingBootstrap"
)

// An ExternalWorkload is a workload outside Kubernetes (a VM, a bare-metal host) whose Trellis proxy joins the mesh: it gets the identity spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount> with a single-use bootstrap token, renews its certificate with the certificate itself, and Services whose selector matches its labels send traffic to its addresses.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ew,categories={trellis}
// +kubebuilder:metadata:labels="app.kubernetes.io/part-of=trellis"
// +kubebuilder:metadata:labels="app.kubernetes.io/managed-by=trellis"
// +kubebuilder:printcolumn:name="Service Account",type=string,JSONPath=`.spec.serviceAccount`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.addresses[0].ip`
// +kubebuilder:printcolumn:name="Certified",type=string,JSONPath=`.status.conditions[?(@.type=="Certified")].status`
// +kubebuilder:printcolumn:name="Expiry",type=date,JSONPath=`.status.certificateExpiry`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ExternalWorkload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ExternalWorkloadSpec   `json:"spec"`
	Status ExternalWorkloadStatus `json:"status,omitempty"`
}

// ExternalWorkloadSpec is who the workload is and where it is reached.
type ExternalWorkloadSpec struct {
	// The ServiceAccount name of the workload's identity (it need not exist as an object): spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>. A DNS label, as a mesh identity's account must be.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="serviceAccount is immutable (a bootstrap token was minted for this identity): delete the ExternalWorkload and create it again"
	ServiceAccount string `json:"serviceAccount"`
	// The IP addresses the workload is reached at by the cluster's pods, at most one per family.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.size() < 2 || ip(self[0].ip).family() != ip(self[1].ip).family()",message="at most one address per family"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="addresses are immutable (the certified workload is reached there): delete the ExternalWorkload and create it again"
	// +listType=atomic
	Addresses []WorkloadAddress `json:"addresses"`
	// The ports the workload serves, matched by name or number against the targetPort of the Services that select it.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Ports []WorkloadPort `json:"ports,omitempty"`
}

// WorkloadAddress is one IP address of an ExternalWorkload.
type WorkloadAddress struct {
	// A unicast IPv4 or IPv6 address (immutable, with the list).
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).isGlobalUnicast()",message="must be a unicast IP address (not loopback, link-local, multicast or unspecified)"
	IP string `json:"ip"`
}

// WorkloadPort is one port an ExternalWorkload serves (TCP).
type WorkloadPort struct {
	// An IANA service name a Service's targetPort may name.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`
	// +optional
	Name string `json:"name,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// ExternalWorkloadStatus is written by the controller.
type ExternalWorkloadStatus struct {
	// Conditions: Certified says whether the workload holds a certificate.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// The SHA-256 (hex) of the public key that redeemed the bootstrap token: renewals must prove possession of this key, so a stolen certificate of the same identity for another key cannot renew. A new bootstrap token replaces it.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	KeySHA256 string `json:"keySHA256,omitempty"`
	// When the last certificate issued to the workload expires.
	// +optional
	CertificateExpiry *metav1.Time `json:"certificateExpiry,omitempty"`
}

// ExternalWorkloadList is a list of ExternalWorkloads.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type ExternalWorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExternalWorkload `json:"items"`
}
