//! Integration tests of the generated code: the descriptor set for reflection, and
//! whole messages through the wire.

mod descriptor;
mod messages;
