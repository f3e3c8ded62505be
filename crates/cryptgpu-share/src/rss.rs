//! [`Rss`] and [`BinaryRss`]: one party's two shares of an arithmetic or XOR secret.

use crate::{Result, ShareError};
use cryptgpu_backend::{DeviceTensor, GpuBackend};

/// One party's part of a 2-out-of-3 replicated arithmetic sharing of a tensor over Z_2^64:
/// x = x0 + x1 + x2, and party P_i holds `own` = x_i and `next` = x_{i+1} (indices mod 3).
/// Both stay on the party's device.
pub struct Rss<B: GpuBackend> {
    pub(crate) own: B::Tensor,
    pub(crate) next: B::Tensor,
}

/// One party's part of a 2-out-of-3 replicated XOR sharing of a tensor of 64-bit words
/// (or packed bits): x = x0 ⊕ x1 ⊕ x2, held like [`Rss`]. The comparison protocols build on it.
pub struct BinaryRss<B: GpuBackend> {
    pub(crate) own: B::Tensor,
    pub(crate) next: B::Tensor,
}

macro_rules! share_pair_common {
    ($ty:ident) => {
        impl<B: GpuBackend> $ty<B> {
            /// Builds a sharing from this party's two shares (`x_i`, `x_{i+1}`), which must have
            /// the same shape.
            pub fn from_shares(own: B::Tensor, next: B::Tensor) -> Result<Self> {
                if own.shape() != next.shape() {
                    return Err(ShareError::Shape {
                        op: stringify!($ty),
                        lhs: own.shape().to_vec(),
                        rhs: next.shape().to_vec(),
                    });
                }
                Ok(Self { own, next })
            }

            /// The secret's shape.
            pub fn shape(&self) -> &[usize] {
                self.own.shape()
            }

            /// Elements of the secret.
            pub fn len(&self) -> usize {
                self.own.len()
            }

            /// Whether the secret has no elements.
            pub fn is_empty(&self) -> bool {
                self.own.is_empty()
            }

            /// This party's share `x_i`.
            pub fn own_share(&self) -> &B::Tensor {
                &self.own
            }

            /// This party's copy of the next party's share `x_{i+1}`.
            pub fn next_share(&self) -> &B::Tensor {
                &self.next
            }
        }

        impl<B: GpuBackend> Clone for $ty<B> {
            fn clone(&self) -> Self {
                Self {
                    own: self.own.clone(),
                    next: self.next.clone(),
                }
            }
        }

        impl<B: GpuBackend> std::fmt::Debug for $ty<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Shares are not secret to their holder, but printing them invites leaks into logs.
                f.debug_struct(stringify!($ty))
                    .field("shape", &self.shape())
                    .finish_non_exhaustive()
            }
        }
    };
}

share_pair_common!(Rss);
share_pair_common!(BinaryRss);
