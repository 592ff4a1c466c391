//! The machinery behind the API table in [`super`]: the [`Body`] trait every request and response
//! type implements in its API's module, and the `define_apis!` macro that turns the table's rows
//! into [`ApiKey`](super::ApiKey), [`Request`](super::Request) and [`Response`](super::Response)
//! with their dispatch. It never encodes a field itself: bodies belong to their API's module.

use super::codec::{Reader, Writer};
use super::ProtocolError;

/// A request or response body: how it is written and read. Implemented next to the type, in its
/// API's module (or in `shared` for a type several APIs answer with).
pub(super) trait Body: Sized {
    fn encode(&self, w: &mut Writer);

    /// Reads the body from the front of `r`. The caller checks that nothing is left over.
    fn decode(r: &mut Reader) -> Result<Self, ProtocolError>;
}

/// `payload!(Type, name)` is `name`: lets an optional table column (the request type) decide
/// whether a generated match arm binds a variant's payload (a unit variant has none to bind).
macro_rules! payload {
    ($_ty:ty, $name:ident) => {
        $name
    };
}
pub(super) use payload;

/// Expands the API table (row format documented at its one invocation, in [`super`]).
macro_rules! define_apis {
    ($(
        $(#[$doc:meta])*
        $Api:ident = $key:literal, $module:ident, ($($Req:ty)?) => $Resp:ty;
    )+) => {
        $(
            pub mod $module;
            pub use $module::*;
        )+

        /// The operations of the protocol, one per row of the API table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiKey {
            $( $(#[$doc])* $Api = $key, )+
        }

        // Every declared version range is well-formed, or the crate does not build. (Key numbers
        // need no such check: the enum refuses duplicate discriminants.)
        const _: () = {
            $(
                assert!(
                    $module::VERSIONS.0 <= $module::VERSIONS.1,
                    concat!("API ", stringify!($Api), ": VERSIONS lowest above highest"),
                );
            )+
        };

        impl ApiKey {
            /// Every API, in table order.
            pub const ALL: [ApiKey; [$($key),+].len()] = [$(ApiKey::$Api),+];

            pub fn from_u16(v: u16) -> Result<ApiKey, ProtocolError> {
                match v {
                    $( $key => Ok(ApiKey::$Api), )+
                    _ => Err(ProtocolError::UnknownApi(v)),
                }
            }

            /// Versions this build speaks, inclusive: the `VERSIONS` its module declares.
            pub fn versions(self) -> (u16, u16) {
                match self {
                    $( ApiKey::$Api => $module::VERSIONS, )+
                }
            }

            pub fn check_version(self, version: u16) -> Result<(), ProtocolError> {
                let (lo, hi) = self.versions();
                if version < lo || version > hi {
                    return Err(ProtocolError::UnsupportedVersion { api: self, version });
                }
                Ok(())
            }
        }

        /// A request, one variant per API; an API whose request has no body has a unit variant.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $Api $( ($Req) )?, )+
        }

        /// A successful response's body, one variant per API.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Response {
            $( $Api($Resp), )+
        }

        impl Request {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $( Request::$Api { .. } => ApiKey::$Api, )+
                }
            }

            /// The body as chunks (large byte strings are not copied, see [`codec::Writer`]).
            pub fn encode_body(&self) -> Vec<Bytes> {
                let mut w = codec::Writer::new();
                match self {
                    $(
                        Request::$Api $( ($crate::wire::table::payload!($Req, body)) )? => {
                            $( <$Req as $crate::wire::table::Body>::encode(body, &mut w); )?
                        }
                    )+
                }
                w.finish()
            }

            /// Decodes `api`'s request body, which must be consumed exactly.
            pub fn decode_body(api: ApiKey, body: Bytes) -> Result<Request, ProtocolError> {
                let mut r = codec::Reader::new(body);
                let req = match api {
                    $(
                        ApiKey::$Api => Request::$Api $(
                            (<$Req as $crate::wire::table::Body>::decode(&mut r)?)
                        )?,
                    )+
                };
                r.finish()?;
                Ok(req)
            }
        }

        impl Response {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $( Response::$Api(_) => ApiKey::$Api, )+
                }
            }

            /// The body as chunks (large byte strings are not copied, see [`codec::Writer`]).
            pub fn encode_body(&self) -> Vec<Bytes> {
                let mut w = codec::Writer::new();
                match self {
                    $(
                        Response::$Api(body) => {
                            <$Resp as $crate::wire::table::Body>::encode(body, &mut w)
                        }
                    )+
                }
                w.finish()
            }

            /// Decodes `api`'s response body from the front of `r`; the caller checks that nothing
            /// is left over.
            pub fn decode_body(
                api: ApiKey,
                r: &mut codec::Reader,
            ) -> Result<Response, ProtocolError> {
                Ok(match api {
                    $(
                        ApiKey::$Api => {
                            Response::$Api(<$Resp as $crate::wire::table::Body>::decode(r)?)
                        }
                    )+
                })
            }
        }
    };
}
pub(super) use define_apis;
