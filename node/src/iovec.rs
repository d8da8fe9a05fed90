//! One vectored write for a response head and its body.
//!
//! monoio has no `IoVecBuf` for a pair of `Bytes`-like buffers, so [`HeadBody`] owns both and
//! the two `iovec`s describing them. The head is the connection's reused `BytesMut`; the body is
//! the cached `Bytes` or a slice of the mapped segment, sent without a copy. The `iovec` array is
//! boxed so its address survives the wrapper being moved into the I/O operation, and the box is
//! handed back with the buffers so a connection reuses it (no allocation per response).

use bytes::{Bytes, BytesMut};
use monoio::buf::IoVecBuf;

/// A response head and body owned for the duration of one vectored write.
///
/// The buffers are reachable only by value, through [`HeadBody::into_parts`]; while the value
/// exists nothing can change them, which is what the `IoVecBuf` implementation below relies on.
/// Reaching in does not compile:
///
/// ```compile_fail
/// use edgemirror_node::iovec::{new_pair, HeadBody};
/// let mut pair = HeadBody::new(bytes::BytesMut::from(&b"head"[..]), bytes::Bytes::new(), new_pair());
/// pair.head.clear(); // the iovec would point at freed or changed memory
/// ```
pub struct HeadBody {
    head: BytesMut,
    body: Bytes,
    iov: Box<[libc::iovec; 2]>,
}

/// A spare `iovec` pair, kept by a connection between responses.
pub type IovecPair = Box<[libc::iovec; 2]>;

pub fn new_pair() -> IovecPair {
    Box::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2])
}

impl HeadBody {
    pub fn new(head: BytesMut, body: Bytes, mut iov: IovecPair) -> HeadBody {
        iov[0] = libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() };
        iov[1] = libc::iovec { iov_base: body.as_ptr() as *mut libc::c_void, iov_len: body.len() };
        HeadBody { head, body, iov }
    }

    pub fn into_parts(self) -> (BytesMut, Bytes, IovecPair) {
        (self.head, self.body, self.iov)
    }
}

// SAFETY: the two iovecs point into `head` and `body`, which this value owns and never mutates
// while it exists (the fields are only reachable by value through `into_parts`), so the memory
// they describe stays valid and unchanged for as long as the runtime holds the value. The iovec
// array lives in a Box: its address does not change when the value moves.
unsafe impl IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        2
    }
}
