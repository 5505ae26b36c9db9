package envconfig

import (
	"errors"
	"testing"
	"time"
)

type testConfig struct {
	URL      string        `env:"URL" envDefault:"nats://127.0.0.1:4222"`
	Interval time.Duration `env:"INTERVAL" envDefault:"15s"`
	Rate     int64         `env:"UPLINK_RATE"`
}

func TestParse(t *testing.T) {
	vars := map[string]string{"TP_INTERVAL": "30s", "TP_UPLINK_RATE": "", "OTHER_URL": "ignored"}
	cfg, err := Parse[testConfig]("TP_", func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "nats://127.0.0.1:4222" || cfg.Interval != 30*time.Second || cfg.Rate != 0 {
		t.Fatalf("cfg = %+v: want the default URL, 30s from the environment, an empty rate as unset", cfg)
	}
	if _, err := Parse[testConfig]("TP_", func(k string) string { return map[string]string{"TP_INTERVAL": "soon"}[k] }); err == nil {
		t.Fatal("Parse accepted a bad duration")
	}
	fe := &FieldError{Field: "uplink-rate", Err: errors.New("negative")}
	var target *FieldError
	if !errors.As(error(fe), &target) || target.Field != "uplink-rate" || fe.Error() != "config uplink-rate: negative" {
		t.Fatalf("FieldError = %v", fe)
	}
}
