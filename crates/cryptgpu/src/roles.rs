//! Who owns what in a job: the model owner, the data owner and the helper. Its own module,
//! below both the job manifest (which records the roles) and the jobs (which act on them).

use cryptgpu_transport::PartyId;

/// Who owns what in a job: the model owner shares the weights, the data owner the examples
/// (and receives the predictions); the third party helps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The party that owns the model's weights.
    pub model_owner: PartyId,
    /// The party that owns the data and receives the predictions.
    pub data_owner: PartyId,
}

impl Roles {
    /// P0 owns the model, P1 the data, P2 helps.
    pub const DEFAULT: Roles = Roles {
        model_owner: PartyId::P0,
        data_owner: PartyId::P1,
    };

    /// What `party` does, in words.
    pub fn describe(&self, party: PartyId) -> &'static str {
        if party == self.model_owner {
            "model owner"
        } else if party == self.data_owner {
            "data owner"
        } else {
            "helper"
        }
    }
}
