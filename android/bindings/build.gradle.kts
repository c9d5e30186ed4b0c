import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// The bindings as an Android library: this module's platform-independent Kotlin (also
// built for the JVM by pom.xml) plus the Kotlin uniffi generates from the core.
plugins {
    alias(libs.plugins.android.library)
    alias(libs.plugins.kotlin.android)
}

// The repository's root: Cargo's workspace.
val repoRoot: File = rootDir.parentFile
val cargoTarget: File = System.getenv("CARGO_TARGET_DIR")?.let(::File) ?: repoRoot.resolve("target")
// Where scripts/test-kotlin puts it too, so both builds read the same generated code.
val generatedKotlin: File = layout.buildDirectory.dir("generated/uniffi/kotlin").get().asFile

android {
    namespace = "im.linnet.bindings"
    compileSdk = 35

    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // src/main/kotlin is a default source directory; the generated one is added.
    sourceSets["main"].kotlin.srcDir(generatedKotlin)
    // The tests need the host library and a local server: scripts/test-kotlin runs them
    // through pom.xml, not here.
    sourceSets["test"].java.setSrcDirs(emptyList<File>())
    sourceSets["test"].kotlin.setSrcDirs(emptyList<File>())
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    api(libs.kotlinx.coroutines.android)
    // The AAR carries JNA's native part for every Android ABI (the jar has desktop ones).
    implementation(variantOf(libs.jna) { artifactType("aar") })
}

// The generated Kotlin depends only on the core's exported interface, which is the same for
// every target, so the host build of the library is what uniffi-bindgen reads.
val buildHostLibrary by tasks.registering(Exec::class) {
    group = "linnet"
    description = "Builds the core's FFI library and uniffi-bindgen for this machine."
    workingDir = repoRoot
    commandLine("cargo", "build", "-q", "--locked", "-p", "linnet-ffi", "--lib", "--bin", "uniffi-bindgen")
}

val generateUniffiKotlin by tasks.registering(Exec::class) {
    group = "linnet"
    description = "Generates the Kotlin bindings (package im.linnet.ffi) from the host library."
    dependsOn(buildHostLibrary)
    val library = cargoTarget.resolve("debug/" + System.mapLibraryName("linnet_ffi"))
    val outDir = generatedKotlin
    inputs.file(library)
    outputs.dir(outDir)
    workingDir = repoRoot
    // No stale files of a removed type are left to compile.
    doFirst { outDir.deleteRecursively() }
    commandLine(
        cargoTarget.resolve("debug/uniffi-bindgen").path,
        "generate", "--library", library.path,
        "--language", "kotlin", "--no-format",
        "--out-dir", outDir.path,
    )
}

// -Plinnet.generateBindings=false builds from what is already generated (no Rust toolchain).
if (providers.gradleProperty("linnet.generateBindings").orNull != "false") {
    tasks.named("preBuild") { dependsOn(generateUniffiKotlin) }
}
