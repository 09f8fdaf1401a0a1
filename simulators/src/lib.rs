//! omo's simulators: synthetic store visits, replay files for gateways, fake LINE and FCM
//! endpoints, load generation and the one-command demo.

pub mod demo;
pub mod fake_fcm;
pub mod fake_line;
pub mod fake_webhook;
pub mod fault;
pub mod load;
pub mod mqtt_gateway;
pub mod procs;
pub mod radio;
pub mod scenario;
pub mod served;
pub mod synth;
pub mod world;
