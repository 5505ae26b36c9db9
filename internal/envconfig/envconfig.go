// Package envconfig loads a binary's Config struct from its environment
// variables (caarlos0/env tags under a prefix such as TILLPIPE_RELAY_) so
// that each cmd can then register its flags with those values as defaults:
// a flag beats the environment, which beats the envDefault tag.
package envconfig

import (
	"fmt"

	"github.com/caarlos0/env/v11"
)

// Parse fills a T from the variables getenv returns under prefix. Only the
// variables T declares are read, and an empty value counts as unset.
// getenv is os.Getenv in main and a map lookup in tests, so tests never
// touch the process environment.
func Parse[T any](prefix string, getenv func(string) string) (T, error) {
	var zero T
	params, err := env.GetFieldParamsWithOptions(&zero, env.Options{Prefix: prefix})
	if err != nil {
		return zero, fmt.Errorf("list config variables: %w", err)
	}
	environ := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environ[p.Key] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[T](env.Options{Prefix: prefix, Environment: environ})
	if err != nil {
		return zero, fmt.Errorf("parse environment: %w", err)
	}
	return cfg, nil
}

// FieldError is an invalid configuration value, named by its flag.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("config %s: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }
