package install

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// apiService is apiregistration.k8s.io/v1's APIService, the fields the
// chart writes (k8s.io/kube-aggregator is not a dependency): strict
// decoding into it catches a misspelt field.
type apiService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Group                string `json:"group"`
		Version              string `json:"version"`
		GroupPriorityMinimum int32  `json:"groupPriorityMinimum"`
		VersionPriority      int32  `json:"versionPriority"`
		CABundle             []byte `json:"caBundle"`
		Service              struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			Port      int32  `json:"port"`
		} `json:"service"`
	} `json:"spec"`
}
