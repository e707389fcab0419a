package devengine

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// TestExecutorTokensMustNameTheEngine: executors mint their tokens with
// aud = GAMELAN_EXECUTOR_JWT_AUDIENCE; the engine accepts, over gRPC and
// HTTP, a token for the audience DEVENGINE_EXECUTOR_AUDIENCE names
// (gamelan-engine by default) and refuses one for any other.
func TestExecutorTokensMustNameTheEngine(t *testing.T) {
	secret := hex.EncodeToString(securitytest.Secret(t))
	audiences := []string{"gamelan-engine", "engine-eu-1", "gamelan-executor"}
	for _, c := range []struct{ setting, audience string }{{"", "gamelan-engine"}, {"engine-eu-1", "engine-eu-1"}} {
		t.Run("DEVENGINE_EXECUTOR_AUDIENCE="+c.setting, func(t *testing.T) {
			grpcAddr, httpAddr := freeAddress(t), freeAddress(t)
			env := map[string]string{"DEVENGINE_JWT_SECRET": secret, "DEVENGINE_EXECUTOR_AUDIENCE": c.setting}
			o, err := parseOptions([]string{"-grpc", grpcAddr, "-http", httpAddr, "-kafka", freeAddress(t)},
				func(key string) string { return env[key] }, io.Discard)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan error, 1)
			go func() { stopped <- run(ctx, o, io.Discard, slog.New(slog.DiscardHandler)) }()
			t.Cleanup(func() { cancel(); assert.NoError(t, <-stopped) })

			token := func(audience string) string {
				t.Helper()
				minter, err := security.NewMinter(security.MinterConfig{Secret: []byte(secret), Issuer: "gamelan-executor",
					Audience: audience, TTL: 5 * time.Minute, Subject: "exec-1"})
				require.NoError(t, err)
				token, err := minter.Token("")
				require.NoError(t, err)
				return token
			}
			conn, err := ggrpc.NewClient(grpcAddr, ggrpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			client := gamelanv1.NewExecutorServiceClient(conn)
			register := func(audience string) error {
				ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token(audience))
				_, err := client.RegisterExecutor(ctx, &gamelanv1.RegisterExecutorRequest{ExecutorId: "exec-1", ExecutorType: "tax", MaxConcurrentTasks: 1})
				return err
			}
			heartbeat := func(audience string) int {
				t.Helper()
				req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+httpAddr+"/api/v1/executors/exec-1/heartbeat", nil)
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+token(audience))
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				return resp.StatusCode
			}

			require.Eventually(t, func() bool { return register(c.audience) == nil }, 10*time.Second, 10*time.Millisecond,
				"the engine never accepted a token for %s", c.audience)
			assert.Equal(t, http.StatusOK, heartbeat(c.audience))
			for _, wrong := range slices.DeleteFunc(slices.Clone(audiences), func(a string) bool { return a == c.audience }) {
				assert.Equal(t, codes.Unauthenticated, status.Code(register(wrong)), "gRPC, a token for %s", wrong)
				assert.Equal(t, http.StatusUnauthorized, heartbeat(wrong), "HTTP, a token for %s", wrong)
			}
		})
	}
}
