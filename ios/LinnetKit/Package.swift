// swift-tools-version:5.9
// LinnetKit: the core for the iOS app. `LinnetFFI` is what uniffi generates from the core
// (scripts/test-swift and scripts/build-mobile put it in Sources/LinnetFFI and
// Sources/LinnetFFIFFI; it is not checked in); `LinnetKit` is the thin layer the app uses.
// On Linux the tests link the host library (-L target/debug, see scripts/test-swift); the
// iOS app links the XCFramework that scripts/build-mobile makes.
import PackageDescription

let package = Package(
    name: "LinnetKit",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [.library(name: "LinnetKit", targets: ["LinnetKit"])],
    targets: [
        .systemLibrary(name: "LinnetFFIFFI", path: "Sources/LinnetFFIFFI"),
        .target(
            name: "LinnetFFI",
            dependencies: ["LinnetFFIFFI"],
            path: "Sources/LinnetFFI",
            linkerSettings: [.linkedLibrary("linnet_ffi")]
        ),
        .target(name: "LinnetKit", dependencies: ["LinnetFFI"]),
        // scripts/bench-ffi
        .executableTarget(name: "LinnetBench", dependencies: ["LinnetKit"]),
        .testTarget(name: "LinnetKitTests", dependencies: ["LinnetKit"]),
    ]
)
