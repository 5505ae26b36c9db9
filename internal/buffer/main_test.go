package buffer

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The crash child is killed, never returns through goleak.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
