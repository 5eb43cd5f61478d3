// Package auth is the gateway's authentication service, free of Caddy and
// of HTTP: log in with a password, refresh, authenticate a bearer token and
// change a password. Failures are *Error values that carry the RFC 6749
// (section 5.2) or RFC 6750 (section 3.1) error code; the HTTP layer maps
// codes to statuses and writes the responses.
//
// The walk of a login: throttle check, hashing slot, throttle check again,
// user lookup, verification, padding of a failure to every stored hash
// class, the failure recorded, then the slot released; scopes granted,
// tokens issued.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crudauth/caddy-crudauth/internal/password"
	"github.com/crudauth/caddy-crudauth/internal/scope"
	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/throttle"
	"github.com/crudauth/caddy-crudauth/internal/token"
	"github.com/crudauth/caddy-crudauth/internal/users"
)

// Error codes of RFC 6749 section 5.2 and RFC 6750 section 3.1.
const (
	CodeInvalidRequest         = "invalid_request"
	CodeInvalidGrant           = "invalid_grant"
	CodeInvalidScope           = "invalid_scope"
	CodeInvalidToken           = "invalid_token"
	CodeInsufficientScope      = "insufficient_scope"
	CodeTemporarilyUnavailable = "temporarily_unavailable"
	CodeServerError            = "server_error"
)

// Error is a failure of the service, as the client is told of it. Reason
// and Err are for logs only.
type Error struct {
	Code        string
	Description string
	// Throttled is set for a refusal by the login throttle (HTTP 429),
	// as opposed to a full hashing queue (503); both carry RetryAfter.
	Throttled  bool
	RetryAfter time.Duration
	// Err is the cause: one of the sentinel errors below, a token
	// verification error, or a store failure.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Description
}

func (e *Error) Unwrap() error { return e.Err }

// Causes of refusals, for logs and metrics; the client sees only the code.
var (
	ErrUnknownUser       = errors.New("token subject does not exist")
	ErrDisabledUser      = errors.New("user is disabled")
	ErrRevoked           = errors.New("token was revoked (token_version moved on)")
	ErrScopeNotAllowed   = errors.New("token holds a scope the user may no longer hold")
	ErrInsufficientScope = errors.New("token lacks a required scope")
	ErrWrongPassword     = errors.New("wrong password")
	ErrSessionEnded      = errors.New("the token's session ended (logout, revocation, reuse or expiry)")
	ErrNoSession         = errors.New("the token belongs to no session (issued before sessions)")
	ErrRefreshReuse      = errors.New("a spent refresh token was presented again after the grace: session revoked")
	errPasswordConflict  = errors.New("the user changed since the token was issued")
)

// Limits on input, checked before anything is hashed or read.
const (
	MaxTokenLen = 4096 // bytes of a refresh token
)

// invalidCredentials is the one answer to an unknown user, a wrong password
// and a disabled user alike, so that a login tells nothing apart.
func invalidCredentials(cause error) *Error {
	return &Error{Code: CodeInvalidGrant, Description: "invalid username or password", Err: cause}
}

func invalidToken(cause error) *Error {
	return &Error{Code: CodeInvalidToken, Description: "the access token is invalid, expired or revoked", Err: cause}
}

func badRequest(code, desc string) *Error { return &Error{Code: code, Description: desc} }

// serverError is a failure of the store or of token issuing. A store that
// cannot answer now (store.ErrUnavailable: a distributed store without
// quorum, or not sure its state is current) is temporarily_unavailable with
// a Retry-After, not an internal error: the request may succeed when
// retried, and nothing was decided on stale state.
func serverError(what string, err error) *Error {
	if errors.Is(err, store.ErrUnavailable) {
		return &Error{Code: CodeTemporarilyUnavailable, Description: "the user store is unavailable, retry shortly",
			RetryAfter: time.Second, Err: fmt.Errorf("%s: %w", what, err)}
	}
	return &Error{Code: CodeServerError, Description: "internal error", Err: fmt.Errorf("%s: %w", what, err)}
}

// Config is what a Service works with. Everything but Throttle and OnHash
// is required.
type Config struct {
	Store     store.Store
	Tokens    *token.Manager
	Hasher    *password.Hasher
	HashLimit *password.Limiter
	// Throttle counts failed logins; nil turns throttling off.
	Throttle throttle.Limiter
	// Policy checks new passwords.
	Policy password.Policy
	// Defaults are the scopes of a login that asks for none; Ceiling the
	// most any token holds, at login and at every refresh and request.
	Defaults, Ceiling scope.Set
	Logger            *zap.Logger
	// OnHash, when set, is called as a login's password hash starts and
	// its result when the hash is done (metrics, and the attack suite's
	// proof that refused logins never hash).
	OnHash func() (done func())
	// Sessions says how refresh tokens and sessions behave.
	Sessions SessionPolicy
	// OnReuse, when set, is called for every session revoked because a
	// spent refresh token came back (a metric).
	OnReuse func()
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Keys, when set, brings Tokens' key set up to date (keys.Ring of an
	// EdDSA or ES256 gateway) before every verification and issue, so
	// that a rotation or retirement takes effect on the next request.
	// Nil for HS256, whose one key never changes.
	Keys KeySyncer
}

// KeySyncer brings a token.Manager's keys up to date; see Config.Keys.
type KeySyncer interface {
	Sync(ctx context.Context) error
}

// syncKeys runs Config.Keys. A store that cannot confirm its key set is
// current answers 503: a retired key must not be honoured from stale state.
func (s *Service) syncKeys(ctx context.Context) *Error {
	if s.c.Keys == nil {
		return nil
	}
	if err := s.c.Keys.Sync(ctx); err != nil {
		return serverError("reading the signing keys", err)
	}
	return nil
}

// SessionPolicy is the session part of Config.
type SessionPolicy struct {
	// Rotate: every refresh spends the refresh token presented and hands
	// out its successor (rotate_refresh, on by default at the Caddy
	// layer).
	Rotate bool
	// ReuseGrace is how long after a rotation the spent token still gets
	// the same successor instead of revoking the session
	// (refresh_reuse_grace).
	ReuseGrace time.Duration
	// Sliding: a refresh moves the session's expiry to refresh_ttl from
	// now (refresh_sliding); otherwise it is fixed at login.
	Sliding bool
	// Max is the most sessions a user holds (max_sessions); the least
	// recently used goes. 0: no limit.
	Max int
}

// Defaults of SessionPolicy at the Caddy layer.
const (
	DefaultReuseGrace  = 10 * time.Second
	DefaultMaxSessions = 50
)

// Service is safe for concurrent use; it never changes after New.
type Service struct {
	c Config
}

// New returns a Service over c.
func New(c Config) *Service {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Service{c: c}
}

// Client is who sends a request, for the throttle and for logs.
type Client struct {
	IP string
	// UserAgent is recorded with a new session (truncated).
	UserAgent string
}

// Tokens is a successful login, refresh or password change.
type Tokens struct {
	Access        string
	AccessExpires time.Time
	// Refresh is empty for a refresh when rotation is off (the refresh
	// token presented stays the one to use).
	Refresh        string
	RefreshExpires time.Time
	// SessionID is the session the tokens belong to.
	SessionID string
	Scopes    scope.Set
	UserID    string
	Username  string
}

// Principal is who a request acts for once its bearer token checked out:
// everything the endpoints need, so that nothing is verified twice.
type Principal struct {
	UserID   string
	Username string
	// Scopes are the token's scopes still under the ceiling; ScopeString
	// their space-separated form.
	Scopes       scope.Set
	ScopeString  string
	TokenVersion uint64
	SessionID    string
}

// Login checks a username and password (the RFC 6749 section 4.3 password
// grant) and issues an access and a refresh token holding the requested
// scopes as granted (scope.Grant).
func (s *Service) Login(ctx context.Context, username, pw string, requested scope.Set, cl Client) (*Tokens, error) {
	if username == "" || pw == "" {
		return nil, badRequest(CodeInvalidRequest, "username and password are required")
	}
	if err := users.CheckUsername(username); err != nil {
		return nil, badRequest(CodeInvalidRequest, err.Error())
	}
	if len(pw) > password.MaxBytes {
		return nil, badRequest(CodeInvalidRequest, "password too long")
	}
	if err := s.syncKeys(ctx); err != nil {
		return nil, err
	}
	// Throttling is decided before the hash and before the user is looked
	// up, so a locked login costs nothing and answers the same whatever the
	// password.
	if err := s.throttleCheck(ctx, cl.IP, username); err != nil {
		return nil, err
	}
	release, err := s.c.HashLimit.Acquire(ctx)
	if err != nil {
		return nil, &Error{Code: CodeTemporarilyUnavailable, Description: "too many logins in progress, retry shortly",
			RetryAfter: time.Second, Err: err}
	}
	// Check again now that a slot is ours: guesses sent at once all passed
	// the first check while the earlier ones were hashing, and the failures
	// those recorded count from here on.
	if err := s.throttleCheck(ctx, cl.IP, username); err != nil {
		release()
		return nil, err
	}
	if s.c.OnHash != nil {
		done := s.c.OnHash()
		slot := release
		release = func() { done(); slot() }
	}
	user, err := s.c.Store.GetUserByName(ctx, username)
	var ok, rehash bool
	var spent string // the hash class whose real verification ran
	switch {
	case errors.Is(err, store.ErrNotFound):
		// An unknown user costs the padding below: no enumeration by timing.
	case err != nil:
		release()
		return nil, serverError("reading user", err)
	default:
		ok, rehash, spent, err = s.c.Hasher.VerifyUnpadded(user.PasswordHash, pw)
		if err != nil {
			// the padding below spends what a usable hash would have
			s.c.Logger.Error("stored password hash is unusable", zap.String("user_id", user.ID), zap.Error(err))
		}
	}
	failed := !ok || user.Disabled
	if failed {
		s.padFailedLogin(ctx, pw, spent)
	}
	var newHash string
	if ok && rehash && !user.Disabled {
		if newHash, err = s.c.Hasher.Hash(pw); err != nil {
			newHash = ""
			s.c.Logger.Error("re-hashing password failed", zap.String("user_id", user.ID), zap.Error(err))
		}
	}
	if failed {
		// Recorded before the slot is released: a guess waiting for the
		// slot checks the throttle again once it has it, and must see this
		// failure (TestLoginFailureRecordedBeforeSlotRelease).
		s.throttleFail(ctx, cl.IP, username)
	}
	release()

	if failed {
		cause, userID := ErrWrongPassword, ""
		switch {
		case user == nil:
			cause = ErrUnknownUser
		case user.Disabled:
			cause, userID = ErrDisabledUser, user.ID
		default:
			userID = user.ID
		}
		s.c.Logger.Warn("login failed",
			zap.String("username", username),
			zap.String("user_id", userID),
			zap.String("client_ip", cl.IP),
			zap.String("reason", cause.Error()))
		return nil, invalidCredentials(cause)
	}
	s.throttleSucceed(ctx, cl.IP, username)

	if newHash != "" {
		s.storeRehash(ctx, user, newHash)
	}
	allowed, err := allowedSet(user.AllowedScopes)
	if err != nil {
		return nil, serverError("user allowed scopes", err)
	}
	granted := scope.Grant(requested, s.c.Defaults, s.c.Ceiling, allowed)
	toks, err := s.startSession(ctx, user, granted, cl)
	if err != nil {
		return nil, err
	}
	toks.Username = user.Username
	s.c.Logger.Info("login",
		zap.String("username", user.Username),
		zap.String("user_id", user.ID),
		zap.String("client_ip", cl.IP),
		zap.String("scope", granted.String()))
	return toks, nil
}

// storeRehash upgrades a hash whose parameters moved on since it was
// stored, without bumping token_version (the password did not change).
func (s *Service) storeRehash(ctx context.Context, user *store.User, newHash string) {
	old := user.PasswordHash
	_, err := s.c.Store.UpdateUser(context.WithoutCancel(ctx), user.ID, func(u *store.User) error {
		if u.PasswordHash == old {
			u.PasswordHash = newHash
		}
		return nil
	})
	if err != nil {
		s.c.Logger.Error("storing re-hashed password failed", zap.String("user_id", user.ID), zap.Error(err))
		return
	}
	s.c.Logger.Info("password re-hashed", zap.String("user_id", user.ID))
}

// padFailedLogin makes a failed login cost one verification of every hash
// class the store holds (see password.Hasher.Pad); spent is the class whose
// real verification ran. The classes are read from the store at each
// failure, so a hash imported through the admin API, or re-hashed by
// another gateway on the same store, pads from its first failed login on.
// Call it inside the hashing slot, like the hash it stands in for.
func (s *Service) padFailedLogin(ctx context.Context, pw, spent string) {
	classes, err := s.c.Store.HashClasses(context.WithoutCancel(ctx))
	if err != nil {
		// Pad still spends the hasher's own class: as much as before
		// classes were recorded.
		s.c.Logger.Error("reading the stored hash classes failed", zap.Error(err))
	}
	s.c.Hasher.Pad(pw, classes, spent)
}

// Refresh issues a new access token from a refresh token (RFC 6749 section
// 6) and, with rotation, the refresh token's successor, spending the one
// presented (RFC 9700 section 4.14.2). The access token's scopes are the
// session's, cut down to the ceiling in force now, to the user's current
// allowed list, and to requested when that is not empty; the successor
// keeps the session's scopes under the ceiling and the allowed list.
//
// A refresh token one generation behind, presented within the reuse grace
// of the rotation that spent it, gets the same successor: two tabs that
// refresh at once both succeed. Any older one, or one past the grace, is a
// replay of a token that leaked: the session ends, and with it every
// access token carrying its sid.
func (s *Service) Refresh(ctx context.Context, refreshToken string, requested scope.Set, cl Client) (*Tokens, error) {
	var userID, username, sid string // known once the token verifies
	fail := func(cause error) error {
		s.c.Logger.Warn("refresh failed", zap.String("username", username), zap.String("user_id", userID),
			zap.String("sid", sid), zap.String("client_ip", cl.IP), zap.String("reason", cause.Error()))
		return &Error{Code: CodeInvalidGrant, Description: "the refresh token is invalid, expired or revoked", Err: cause}
	}
	if len(refreshToken) > MaxTokenLen {
		return nil, fail(errors.New("token too long"))
	}
	if err := s.syncKeys(ctx); err != nil {
		return nil, err
	}
	claims, err := s.c.Tokens.VerifyRefresh(refreshToken)
	if err != nil {
		return nil, fail(err)
	}
	userID, sid = claims.UserID, claims.SessionID
	if sid == "" || claims.Generation == 0 {
		return nil, fail(ErrNoSession)
	}
	state, err := s.authState(ctx, claims)
	username = state.Username
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fail(ErrUnknownUser)
	case err != nil:
		return nil, serverError("reading user state", err)
	case state.Disabled:
		return nil, fail(ErrDisabledUser)
	case state.TokenVersion != claims.TokenVersion:
		return nil, fail(ErrRevoked)
	case !state.HasSession(sid):
		return nil, fail(ErrSessionEnded)
	}
	allowed, err := allowedSet(state.AllowedScopes)
	if err != nil {
		return nil, serverError("user allowed scopes", err)
	}

	pol := s.c.Sessions
	now := s.c.Now()
	var reused, expired bool // set by the run of fn whose result counts
	sess, err := s.c.Store.UpdateSession(context.WithoutCancel(ctx), userID, sid, func(ss *store.Session) error {
		reused, expired = false, false
		switch {
		case !now.Before(ss.ExpiresAt):
			expired = true
			return ErrSessionEnded
		case claims.Generation == ss.Generation:
			if !pol.Rotate && !pol.Sliding && now.Sub(ss.LastUsedAt) < lastUsedResolution {
				return store.ErrSkipWrite // nothing worth a disk write
			}
			if pol.Rotate {
				ss.Generation++
				ss.RotatedAt = now
			}
			if pol.Sliding {
				ss.ExpiresAt = now.Add(s.c.Tokens.RefreshTTL())
			}
			ss.LastUsedAt = now
			return nil
		case pol.Rotate && claims.Generation+1 == ss.Generation && now.Sub(ss.RotatedAt) <= pol.ReuseGrace:
			// Spent a moment ago: hand out the same successor.
			return store.ErrSkipWrite
		default:
			reused = true
			return ErrRefreshReuse
		}
	})
	switch {
	case errors.Is(err, store.ErrSessionNotFound):
		return nil, fail(ErrSessionEnded)
	case reused:
		s.endSession(ctx, userID, sid)
		s.c.Logger.Warn("refresh token reused: session revoked",
			zap.String("username", username), zap.String("user_id", userID), zap.String("sid", sid),
			zap.Uint64("generation", claims.Generation), zap.String("client_ip", cl.IP))
		if s.c.OnReuse != nil {
			s.c.OnReuse()
		}
		return nil, fail(ErrRefreshReuse)
	case expired:
		s.endSession(ctx, userID, sid)
		return nil, fail(ErrSessionEnded)
	case err != nil:
		return nil, serverError("updating the session", err)
	}

	held := sessionScopes(sess, s.c.Ceiling, allowed)
	scopes := held
	if len(requested) > 0 {
		scopes = scopes.Intersect(requested)
	}
	toks, err := s.issueAccess(token.Subject{UserID: userID, Scopes: scopes, TokenVersion: state.TokenVersion,
		SessionID: sid, NotAfter: sess.ExpiresAt})
	if err != nil {
		return nil, err
	}
	if pol.Rotate || pol.Sliding {
		if err := s.issueRefresh(toks, sess, held, state.TokenVersion); err != nil {
			return nil, err
		}
	}
	toks.Username = state.Username
	if c := s.c.Logger.Check(zap.DebugLevel, "refresh"); c != nil {
		c.Write(zap.String("user_id", userID), zap.String("sid", sid), zap.String("client_ip", cl.IP))
	}
	return toks, nil
}

// lastUsedResolution: without rotation or sliding expiry, a session's
// last use is written at most this often, so that refreshes stay reads.
const lastUsedResolution = time.Minute

// sessionScopes are the scopes a session's tokens may hold now: what the
// login granted, under the ceiling in force and the user's allowed list.
func sessionScopes(sess *store.Session, ceiling scope.Set, allowed *scope.Set) scope.Set {
	held, err := scope.New(sess.Scopes...)
	if err != nil {
		return nil // the store holds only scopes that were granted, so valid
	}
	held = held.Intersect(ceiling)
	if allowed != nil {
		held = held.Intersect(*allowed)
	}
	return held
}

// endSession removes a session the service found dead or compromised.
func (s *Service) endSession(ctx context.Context, userID, sid string) {
	err := s.c.Store.DeleteSession(context.WithoutCancel(ctx), userID, sid)
	if err != nil && !errors.Is(err, store.ErrSessionNotFound) {
		s.c.Logger.Error("ending a session failed", zap.String("user_id", userID), zap.String("sid", sid), zap.Error(err))
	}
}

// startSession creates a session for a login (or a password change) and
// issues its first pair of tokens.
func (s *Service) startSession(ctx context.Context, user *store.User, granted scope.Set, cl Client) (*Tokens, error) {
	// Not truncated: max_sessions picks the least recently used session by
	// these times, and a login must not look older than a refresh made in
	// the same second. Tokens carry whole seconds of them.
	now := s.c.Now().UTC()
	ua := cl.UserAgent
	if len(ua) > store.MaxUserAgentLen {
		ua = strings.ToValidUTF8(ua[:store.MaxUserAgentLen], "")
	}
	sess := &store.Session{
		UserID:     user.ID,
		Scopes:     slices.Clone([]string(granted)),
		Generation: 1,
		RotatedAt:  now,
		CreatedAt:  now,
		LastUsedAt: now,
		ExpiresAt:  now.Add(s.c.Tokens.RefreshTTL()),
		UserAgent:  ua,
		Address:    cl.IP,
	}
	removed, err := s.c.Store.CreateSession(context.WithoutCancel(ctx), sess, s.c.Sessions.Max)
	if err != nil {
		return nil, serverError("creating a session", err)
	}
	if len(removed) > 0 {
		s.c.Logger.Info("sessions ended to make room (max_sessions)", zap.String("user_id", user.ID),
			zap.Strings("sids", removed))
	}
	toks, err := s.issueAccess(token.Subject{UserID: user.ID, Scopes: granted, TokenVersion: user.TokenVersion,
		SessionID: sess.ID, NotAfter: sess.ExpiresAt})
	if err != nil {
		return nil, err
	}
	if err := s.issueRefresh(toks, sess, granted, user.TokenVersion); err != nil {
		return nil, err
	}
	return toks, nil
}

// Logout ends the session of a refresh token. It is idempotent: a token
// whose session already ended, or that expired, ends nothing and is no
// error. A token that is not ours is refused (invalid_grant). Any
// generation of the session may end it: a holder of a spent token can at
// worst sign the owner out, which is what a leaked token should lead to.
func (s *Service) Logout(ctx context.Context, refreshToken string, cl Client) error {
	if len(refreshToken) > MaxTokenLen {
		return &Error{Code: CodeInvalidGrant, Description: "the refresh token is invalid", Err: errors.New("token too long")}
	}
	if err := s.syncKeys(ctx); err != nil {
		return err
	}
	claims, err := s.c.Tokens.VerifyRefresh(refreshToken)
	switch {
	case errors.Is(err, token.ErrExpired):
		return nil
	case err != nil:
		return &Error{Code: CodeInvalidGrant, Description: "the refresh token is invalid", Err: err}
	case claims.SessionID == "":
		return nil // a token from before sessions: nothing to end
	}
	err = s.c.Store.DeleteSession(context.WithoutCancel(ctx), claims.UserID, claims.SessionID)
	switch {
	case errors.Is(err, store.ErrSessionNotFound):
		return nil
	case err != nil:
		return serverError("ending the session", err)
	}
	s.c.Logger.Info("logout", zap.String("user_id", claims.UserID), zap.String("sid", claims.SessionID),
		zap.String("client_ip", cl.IP))
	return nil
}

// LogoutAll ends every session of the principal's user: every refresh
// token and every access token of theirs is refused from the next request.
func (s *Service) LogoutAll(ctx context.Context, p Principal, cl Client) (int, error) {
	n, err := s.c.Store.DeleteSessions(context.WithoutCancel(ctx), p.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return 0, invalidToken(ErrUnknownUser)
		}
		return 0, serverError("ending the sessions", err)
	}
	s.c.Logger.Info("logout of every session", zap.String("user_id", p.UserID), zap.Int("sessions", n),
		zap.String("client_ip", cl.IP))
	return n, nil
}

// Sessions lists the principal's live sessions, oldest first.
func (s *Service) Sessions(ctx context.Context, p Principal) ([]*store.Session, error) {
	list, err := s.c.Store.ListSessions(ctx, p.UserID, s.c.Now())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalidToken(ErrUnknownUser)
		}
		return nil, serverError("listing sessions", err)
	}
	return list, nil
}

// ErrNoSuchSession is EndSession's answer for a sid that is not one of the
// principal's live sessions, whoever else's it may be.
var ErrNoSuchSession = errors.New("no such session")

// EndSession ends one of the principal's own sessions. A sid of another
// user's session is not found: sessions are looked up under the
// principal's user only.
func (s *Service) EndSession(ctx context.Context, p Principal, sid string, cl Client) error {
	err := s.c.Store.DeleteSession(context.WithoutCancel(ctx), p.UserID, sid)
	switch {
	case errors.Is(err, store.ErrSessionNotFound):
		return ErrNoSuchSession
	case err != nil:
		return serverError("ending the session", err)
	}
	s.c.Logger.Info("session ended by its user", zap.String("user_id", p.UserID), zap.String("sid", sid),
		zap.String("client_ip", cl.IP))
	return nil
}

// Authenticate checks a bearer access token (as parsed from the
// Authorization header) against the store: the user exists and is enabled,
// the token's epoch is the user's, and its scopes are still allowed. The
// principal's scopes are the token's still under the ceiling.
func (s *Service) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	if err := s.syncKeys(ctx); err != nil {
		return Principal{}, err
	}
	claims, err := s.c.Tokens.VerifyAccess(bearer)
	if err != nil {
		return Principal{}, invalidToken(err)
	}
	state, err := s.authState(ctx, claims)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Principal{}, invalidToken(ErrUnknownUser)
	case err != nil:
		return Principal{}, serverError("reading user state", err)
	case state.Disabled:
		return Principal{}, invalidToken(ErrDisabledUser)
	case state.TokenVersion != claims.TokenVersion:
		return Principal{}, invalidToken(ErrRevoked)
	case state.AllowedScopes != nil && !allowedAll(state.AllowedScopes, claims.Scopes):
		return Principal{}, invalidToken(ErrScopeNotAllowed)
	case claims.SessionID == "":
		return Principal{}, invalidToken(ErrNoSession)
	case !state.HasSession(claims.SessionID):
		return Principal{}, invalidToken(ErrSessionEnded)
	}
	scopes, scopeString := UnderCeiling(s.c.Ceiling, claims.Scopes, claims.ScopeString)
	return Principal{
		UserID:       claims.UserID,
		Username:     state.Username,
		Scopes:       scopes,
		ScopeString:  scopeString,
		TokenVersion: claims.TokenVersion,
		SessionID:    claims.SessionID,
	}, nil
}

// authState reads the state of the token's user. When the state refuses
// the token for a reason that a store still catching up with a write made
// elsewhere explains (a user, a session or a token_version it does not
// know yet: the login that minted the token ran on another gateway a
// moment ago), a store that follows other handles' writes
// (store.CatchUpper) is asked for the state as of every write committed
// before the token was minted. A token minted long enough ago costs
// nothing more: the store's copy was proven current since.
func (s *Service) authState(ctx context.Context, claims *token.Claims) (store.AuthState, error) {
	state, err := s.c.Store.AuthState(ctx, claims.UserID)
	cu, ok := s.c.Store.(store.CatchUpper)
	if !ok || !mayLag(state, err, claims) {
		return state, err
	}
	// iat is in whole seconds: the token was minted before iat + 1s.
	return cu.CatchUp(ctx, claims.UserID, claims.IssuedAt.Add(time.Second))
}

// mayLag reports whether state refuses claims only because it may not
// hold the write that made the token yet. A token_version below the
// user's (a revocation, which also ends the sessions) or a disabled user
// are later writes that the state holds already: refused, no reason to
// wait.
func mayLag(state store.AuthState, err error, claims *token.Claims) bool {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return true
	case err != nil, claims.TokenVersion < state.TokenVersion, state.Disabled:
		return false
	case claims.TokenVersion > state.TokenVersion:
		return true
	}
	return claims.SessionID != "" && !state.HasSession(claims.SessionID)
}

// UnderCeiling returns the scopes of a token that count while ceiling is
// in force, and their string, so that a lowered ceiling takes effect (for
// the rules and for what the backend is told) before the token expires.
// Tokens are minted under the ceiling, so the common case is a token
// wholly under it: no new set, and the scope string from verification.
func UnderCeiling(ceiling, scopes scope.Set, scopeString string) (scope.Set, string) {
	if ceiling.ContainsAll(scopes) {
		return scopes, scopeString
	}
	under := scopes.Intersect(ceiling)
	return under, under.String()
}

// Authorize refuses a principal that lacks one of the scopes needed.
func Authorize(p Principal, need scope.Set) error {
	if len(need) > 0 && !p.Scopes.ContainsAll(need) {
		return &Error{Code: CodeInsufficientScope, Description: "the access token lacks a required scope",
			Err: ErrInsufficientScope}
	}
	return nil
}

// ChangePassword sets a new password for the principal after checking the
// current one, and bumps token_version in the same transaction that stores
// the new hash, so that every earlier token of the user (the principal's
// included) is refused from then on. It returns a fresh pair with the
// principal's scopes. Guessing the current password with a stolen access
// token is a login attempt: the login throttle counts and locks it.
func (s *Service) ChangePassword(ctx context.Context, p Principal, current, next string, cl Client) (*Tokens, error) {
	if err := s.c.Policy.Check(next); err != nil {
		return nil, badRequest(CodeInvalidRequest, "new_password: "+err.Error())
	}
	if err := s.syncKeys(ctx); err != nil {
		return nil, err
	}
	if err := s.throttleCheck(ctx, cl.IP, p.Username); err != nil {
		return nil, err
	}
	release, err := s.c.HashLimit.Acquire(ctx)
	if err != nil {
		return nil, &Error{Code: CodeTemporarilyUnavailable, Description: "too many password operations in progress, retry shortly",
			RetryAfter: time.Second, Err: err}
	}
	// Check again with the slot held, as Login does: guesses sent at once
	// all passed the first check (TestChangePasswordGuessesThrottled).
	if err := s.throttleCheck(ctx, cl.IP, p.Username); err != nil {
		release()
		return nil, err
	}
	user, err := s.c.Store.GetUser(ctx, p.UserID)
	if err != nil {
		release()
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalidToken(ErrUnknownUser)
		}
		return nil, serverError("password change: reading user", err)
	}
	ok, _, verr := s.c.Hasher.Verify(user.PasswordHash, current)
	var newHash string
	if ok {
		newHash, err = s.c.Hasher.Hash(next)
	} else {
		// Recorded before the slot is released, as for a login.
		s.throttleFail(ctx, cl.IP, user.Username)
	}
	release()
	logFields := []zap.Field{
		zap.String("username", user.Username),
		zap.String("user_id", user.ID),
		zap.String("client_ip", cl.IP),
	}
	if verr != nil {
		s.c.Logger.Error("stored password hash is unusable", zap.String("user_id", user.ID), zap.Error(verr))
	}
	if !ok {
		s.c.Logger.Warn("password change failed", append(logFields, zap.String("reason", "wrong current password"))...)
		return nil, &Error{Code: CodeInvalidGrant, Description: "current_password is incorrect", Err: ErrWrongPassword}
	}
	if err != nil {
		return nil, serverError("password change: hashing", err)
	}

	oldHash := user.PasswordHash
	updated, err := s.c.Store.UpdateUser(context.WithoutCancel(ctx), user.ID, func(u *store.User) error {
		// Another change (a revocation, a concurrent password change)
		// landed since the token was checked: it is no longer good.
		if u.Disabled || u.TokenVersion != p.TokenVersion || u.PasswordHash != oldHash {
			return errPasswordConflict
		}
		u.PasswordHash = newHash
		u.TokenVersion++
		u.PasswordChangedAt = time.Now().UTC()
		return nil
	})
	switch {
	case errors.Is(err, errPasswordConflict), errors.Is(err, store.ErrNotFound):
		s.c.Logger.Warn("password change failed", append(logFields, zap.String("reason", "token revoked meanwhile"))...)
		return nil, invalidToken(ErrRevoked)
	case err != nil:
		return nil, serverError("password change: storing", err)
	}
	// Every session ended with the epoch; this device gets a new one.
	if _, err := s.c.Store.DeleteSessions(context.WithoutCancel(ctx), updated.ID); err != nil {
		s.c.Logger.Error("ending the sessions after a password change failed", zap.String("user_id", updated.ID), zap.Error(err))
	}
	toks, err := s.startSession(ctx, updated, p.Scopes, cl)
	if err != nil {
		return nil, err
	}
	toks.Username = updated.Username
	s.throttleSucceed(ctx, cl.IP, user.Username)
	s.c.Logger.Info("password changed", append(logFields, zap.Uint64("token_version", updated.TokenVersion))...)
	return toks, nil
}

// issueAccess mints an access token for subj.
func (s *Service) issueAccess(subj token.Subject) (*Tokens, error) {
	at, atExp, err := s.c.Tokens.IssueAccess(subj)
	if err != nil {
		return nil, serverError("issuing an access token", err)
	}
	return &Tokens{Access: at, AccessExpires: atExp, Scopes: subj.Scopes, UserID: subj.UserID,
		SessionID: subj.SessionID}, nil
}

// issueRefresh adds to t the refresh token of the session's current
// generation, issued at the moment that generation began: issuing it again
// gives the same token.
func (s *Service) issueRefresh(t *Tokens, sess *store.Session, scopes scope.Set, tokenVersion uint64) error {
	issuedAt := sess.RotatedAt
	if !s.c.Sessions.Rotate {
		// Without rotation a new refresh token is only handed out to
		// carry a slid expiry, which must count from now.
		issuedAt = time.Time{}
	}
	var err error
	t.Refresh, t.RefreshExpires, err = s.c.Tokens.IssueRefresh(token.Subject{UserID: sess.UserID, Scopes: scopes,
		TokenVersion: tokenVersion, SessionID: sess.ID, Generation: sess.Generation,
		IssuedAt: issuedAt, NotAfter: sess.ExpiresAt})
	if err != nil {
		return serverError("issuing a refresh token", err)
	}
	return nil
}

// allowedSet returns a user's allowed scopes as a set, nil when the user is
// not restricted.
func allowedSet(list []string) (*scope.Set, error) {
	if list == nil {
		return nil, nil
	}
	s, err := scope.New(list...)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// allowedAll reports whether every token scope is in the user's allowed
// list. The stored list's order is not relied on, and nothing is allocated.
func allowedAll(allowed []string, scopes scope.Set) bool {
	for _, s := range scopes {
		if !slices.Contains(allowed, s) {
			return false
		}
	}
	return true
}

// throttleKey is the form of a username the throttle counts under: the
// store's normalized form, so that ALICE and alice share one budget.
func throttleKey(username string) string { return store.NormalizeUsername(username) }

func (s *Service) throttleCheck(ctx context.Context, ip, username string) *Error {
	if s.c.Throttle == nil {
		return nil
	}
	wait, err := s.c.Throttle.Check(ctx, throttle.IPKey(ip), throttleKey(username))
	if err != nil {
		s.c.Logger.Error("login throttle check failed", zap.Error(err))
		return &Error{Code: CodeTemporarilyUnavailable, Description: "login is temporarily unavailable",
			RetryAfter: time.Second, Err: err}
	}
	if wait > 0 {
		s.c.Logger.Warn("login refused: throttled",
			zap.String("username", username), zap.String("client_ip", ip),
			zap.Duration("retry_after", wait))
		return &Error{Code: CodeTemporarilyUnavailable, Description: "too many failed logins, retry later",
			Throttled: true, RetryAfter: wait}
	}
	return nil
}

func (s *Service) throttleFail(ctx context.Context, ip, username string) {
	if s.c.Throttle == nil {
		return
	}
	wait, err := s.c.Throttle.Fail(context.WithoutCancel(ctx), throttle.IPKey(ip), throttleKey(username))
	switch {
	case err != nil:
		s.c.Logger.Error("recording a failed login failed", zap.Error(err))
	case wait > 0:
		s.c.Logger.Warn("login locked", zap.String("username", username), zap.String("client_ip", ip),
			zap.Duration("lockout", wait))
	}
}

func (s *Service) throttleSucceed(ctx context.Context, ip, username string) {
	if s.c.Throttle == nil {
		return
	}
	if err := s.c.Throttle.Succeed(context.WithoutCancel(ctx), throttle.IPKey(ip), throttleKey(username)); err != nil {
		s.c.Logger.Error("recording a successful login failed", zap.Error(err))
	}
}
