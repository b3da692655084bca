//! Generates the gRPC code for the etcd v3 API and bosun's peer and admin protocols.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &[
                "proto/kv.proto",
                "proto/rpc.proto",
                "proto/peer.proto",
                "proto/admin.proto",
                "proto/resources.proto",
                "proto/pods.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
