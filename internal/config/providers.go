package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/knadh/koanf/maps"
	"go.yaml.in/yaml/v3"
)

// structProvider feeds the defaults struct to koanf through its YAML form,
// so that durations and nesting load exactly as a config file would.
type structProvider struct{ c Config }

func (p structProvider) ReadBytes() ([]byte, error) { return nil, errors.New("not supported") }

func (p structProvider) Read() (map[string]any, error) {
	b, err := yaml.Marshal(p.c)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// mapProvider loads flat dotted keys.
type mapProvider map[string]any

func (p mapProvider) ReadBytes() ([]byte, error) { return nil, errors.New("not supported") }

func (p mapProvider) Read() (map[string]any, error) {
	return maps.Unflatten(p, "."), nil
}

// YAML renders c as YAML, for --print-config.
func (c Config) YAML() (string, error) {
	b, err := yaml.Marshal(c)
	return string(b), err
}

// Duration is a time.Duration written as "60s" in YAML and accepted as a
// Go duration string from files, the environment and flags.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalText parses a Go duration ("200ms", "1m").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}
