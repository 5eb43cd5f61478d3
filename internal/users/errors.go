package users

import (
	"errors"
	"fmt"
)

// Kind says what a caller can do about a failed user operation. The admin
// API turns it into an HTTP status and the CLI into its exit message, so no
// caller has to match on an error's text.
type Kind int

const (
	// Internal: the store or the hasher failed; nothing the caller sent was
	// wrong. It is the zero value, so an Error built without a kind fails
	// closed as a server error.
	Internal Kind = iota
	// Invalid: the input was refused (username, scopes, password policy,
	// import file or record).
	Invalid
	// NotFound: no user with that name.
	NotFound
	// Exists: the username is taken.
	Exists
	// Busy: no password hashing slot was free in time; retrying shortly
	// may succeed.
	Busy
	// Conflict: the change clashes with the store's state (a key rotation
	// that is still pending); it may succeed once that state has passed.
	Conflict
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case NotFound:
		return "not_found"
	case Exists:
		return "exists"
	case Busy:
		return "busy"
	case Conflict:
		return "conflict"
	case Internal:
		return "internal"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is the error of every Service method and of the import parsers.
// Msg is written for the operator (the CLI prints it, the admin API returns
// it); Err is the cause, so that errors.Is(err, store.ErrNotFound) or
// errors.Is(err, password.ErrBusy) still hold.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

// Error returns Msg, or the cause's text when Msg is empty (an internal
// failure passed on as it came).
func (e *Error) Error() string {
	switch {
	case e.Msg != "":
		return e.Msg
	case e.Err != nil:
		return e.Err.Error()
	}
	return e.Kind.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err: that of the first *Error in its chain, or
// Internal for any other error. Call it on a non-nil error only.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// errorf builds an *Error with the formatted message and cause.
func errorf(kind Kind, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// internal wraps a failure of the store or the hasher, keeping its text: it
// is what the operator sees, as before the service had error kinds.
func internal(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Kind: Internal, Err: err}
}
