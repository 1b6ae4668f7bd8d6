package services

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AuthorsConfig configures the authors gRPC service.
type AuthorsConfig struct {
	Name   string           // reported as served_by
	Faults *faults.Injector // nil: never fail
	Log    *slog.Logger
}

type authorsServer struct {
	demopb.UnimplementedAuthorsServer
	cfg AuthorsConfig
}

// NewAuthorsServer returns the Authors service implementation.
func NewAuthorsServer(cfg AuthorsConfig) demopb.AuthorsServer {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &authorsServer{cfg: cfg}
}

// RegisterAuthors registers the Authors service on s.
func RegisterAuthors(s *grpc.Server, cfg AuthorsConfig) {
	demopb.RegisterAuthorsServer(s, NewAuthorsServer(cfg))
}

func (a *authorsServer) GetAuthor(ctx context.Context, req *demopb.GetAuthorRequest) (*demopb.Author, error) {
	if a.cfg.Faults.Fail() {
		return nil, status.Error(codes.Unavailable, "injected failure")
	}
	id, err := ParseBookID(req.GetBookId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	au := AuthorOfBook(id)
	return &demopb.Author{Id: au.ID, Name: au.Name, ServedBy: a.cfg.Name}, nil
}

func (a *authorsServer) ListAuthors(req *demopb.ListAuthorsRequest, stream grpc.ServerStreamingServer[demopb.Author]) error {
	if a.cfg.Faults.Fail() {
		return status.Error(codes.Unavailable, "injected failure")
	}
	for i, au := range authorList() {
		if req.GetLimit() > 0 && uint32(i) >= req.GetLimit() {
			break
		}
		if err := stream.Send(&demopb.Author{Id: au.ID, Name: au.Name, ServedBy: a.cfg.Name}); err != nil {
			return err
		}
	}
	return nil
}

// bookIDString is the wire form of a book ID in GetAuthorRequest.
func bookIDString(id int) string { return strconv.Itoa(id) }
