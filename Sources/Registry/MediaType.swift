/// The media types obd reads and writes (OCI and Docker v2 manifests, indexes, configs,
/// layers). They stay strings in descriptors and JSON; these are their one spelling.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    /// An uncompressed tar layer; obd layer blobs (LSMT/ZFile) use it too, as
    /// accelerated-container-image does.
    public static let ociLayerTar = "application/vnd.oci.image.layer.v1.tar"

    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar"

    /// Index types (a list of per-platform manifests).
    public static let indexTypes: Set<String> = [ociIndex, dockerManifestList]
}
