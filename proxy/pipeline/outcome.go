package pipeline

// Outcome is what the stage that answered recorded: the status written
// (0 for none), the gRPC status ("" for none), and whether a response was
// written at all. For stages that report on a request after it (tracing).
func (x *Exchange) Outcome() (status int, grpcStatus string, wrote bool) {
	return x.status, x.grpc, x.wrote
}

// Optional is l, or Identity for a stage a configuration leaves out (nil).
func Optional(l Layer) Layer {
	if l == nil {
		return Identity
	}
	return l
}
