pub use poolvisor_actors::*;
