//! The byte streams the node speaks HTTP over: plain TCP or TLS, for clients ([`ClientStream`])
//! and origins ([`OriginStream`]). Each is an enum delegating monoio's owned-buffer read and
//! write traits, so the connection loop and the origin client are written once.

use std::io::Cursor;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, PrefixedReadIo};
use monoio::net::TcpStream;
use monoio::BufResult;

/// A TLS client connection; its first bytes were read to tell TLS from plain HTTP and are
/// replayed to rustls through the prefix.
pub type ServerTls = monoio_rustls::ServerTlsStream<PrefixedReadIo<TcpStream, Cursor<Vec<u8>>>>;
pub type ClientTls = monoio_rustls::ClientTlsStream<TcpStream>;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<ServerTls>),
}

pub enum OriginStream {
    Plain(TcpStream),
    Tls(Box<ClientTls>),
}

macro_rules! delegate_io {
    ($ty:ident) => {
        impl AsyncReadRent for $ty {
            async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.read(buf).await,
                    $ty::Tls(s) => s.read(buf).await,
                }
            }

            async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.readv(buf).await,
                    $ty::Tls(s) => s.readv(buf).await,
                }
            }
        }

        impl AsyncWriteRent for $ty {
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.write(buf).await,
                    $ty::Tls(s) => s.write(buf).await,
                }
            }

            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.writev(buf).await,
                    $ty::Tls(s) => s.writev(buf).await,
                }
            }

            async fn flush(&mut self) -> std::io::Result<()> {
                match self {
                    $ty::Plain(s) => s.flush().await,
                    $ty::Tls(s) => s.flush().await,
                }
            }

            async fn shutdown(&mut self) -> std::io::Result<()> {
                match self {
                    $ty::Plain(s) => s.shutdown().await,
                    $ty::Tls(s) => s.shutdown().await,
                }
            }
        }
    };
}

delegate_io!(ClientStream);
delegate_io!(OriginStream);
